// /client/v4/zones/:zone/dns_records: the endpoints Berth's adapter uses (list by name, type or
// comment prefix; create; patch; delete), with Cloudflare's envelope, errors, pagination and
// bearer-token auth scoped to one zone.
import { isIPv4, isIPv6 } from "node:net";
import { z } from "zod";
import { findRoute, header, json, type Incoming, type Outgoing, type Route } from "../stripe/http.ts";
import type { Store, StoredRecord } from "./store.ts";

export const API_PREFIX = "/client/v4";

interface Env {
  store: Store;
  apiToken: string;
}

type Handler = (env: Env, request: Incoming, params: Record<string, string>) => Outgoing;

/** An answer in Cloudflare's error envelope. */
class CloudflareError extends Error {
  readonly status: number;
  readonly code: number;

  constructor(status: number, code: number, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function envelope(result: unknown, extra: Record<string, unknown> = {}) {
  return { success: true, errors: [], messages: [], result, ...extra };
}

function present(record: StoredRecord) {
  return {
    id: record.id,
    name: record.name,
    type: record.type,
    content: record.content,
    proxiable: true,
    proxied: record.proxied,
    ttl: record.ttl,
    settings: {},
    meta: {},
    ...(record.comment === null ? {} : { comment: record.comment, comment_modified_on: record.commentModifiedOn }),
    tags: [],
    created_on: record.createdOn,
    modified_on: record.modifiedOn,
  };
}

// What the SDK's RecordCreateParams/RecordEditParams allow for A and AAAA, less what Berth never sends (tags, settings, private routing).
const recordBody = z.strictObject({
  type: z.enum(["A", "AAAA"]),
  name: z.string().min(1).max(255),
  content: z.string(),
  ttl: z.number().int().optional(),
  proxied: z.boolean().optional(),
  comment: z.string().max(100).optional(),
});
type RecordBody = z.infer<typeof recordBody>;

function readRecord<T extends z.ZodType<Partial<RecordBody>>>(env: Env, request: Incoming, schema: T): z.infer<T> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(request.body);
  } catch {
    throw new CloudflareError(400, 9207, "Request body is invalid.");
  }
  const result = schema.safeParse(parsed);
  if (!result.success)
    throw new CloudflareError(400, 9000, `DNS record is invalid: ${result.error.issues.map((issue) => `${issue.path.join(".")} ${issue.message}`).join(", ")}`);
  const body = result.data;
  if (body.ttl !== undefined && body.ttl !== 1 && (body.ttl < 60 || body.ttl > 86400))
    throw new CloudflareError(400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.");
  if (body.name !== undefined) {
    body.name = body.name.toLowerCase().replace(/\.$/, "");
    if (body.name !== env.store.zoneName && !body.name.endsWith(`.${env.store.zoneName}`))
      throw new CloudflareError(400, 9005, "Record name is outside the zone.");
  }
  return body;
}

function checkContent(type: "A" | "AAAA", content: string) {
  if (type === "A" && !isIPv4(content)) throw new CloudflareError(400, 9005, "Content for A record must be a valid IPv4 address.");
  if (type === "AAAA" && !isIPv6(content)) throw new CloudflareError(400, 9005, "Content for AAAA record must be a valid IPv6 address.");
}

function existing(env: Env, id: string): StoredRecord {
  const record = env.store.records.get(id);
  if (!record) throw new CloudflareError(404, 81044, "Record does not exist.");
  return record;
}

/** The list filters Berth uses, in the SDK's encoding (`name.exact=…`); any other parameter is refused, so a change in the SDK shows. */
const LIST_PARAMETERS = new Set(["name.exact", "type", "comment.startswith", "page", "per_page"]);

function list(env: Env, request: Incoming): Outgoing {
  const query = new URLSearchParams(request.query);
  for (const key of query.keys()) if (!LIST_PARAMETERS.has(key)) throw new CloudflareError(400, 9000, `Unsupported list parameter: ${key}`);
  const page = Number(query.get("page") ?? 1);
  const perPage = Number(query.get("per_page") ?? 100);
  if (!Number.isInteger(page) || page < 1 || !Number.isInteger(perPage) || perPage < 5 || perPage > 5_000_000)
    throw new CloudflareError(400, 9000, "Invalid page or per_page.");
  const name = query.get("name.exact")?.toLowerCase();
  const type = query.get("type");
  const commentPrefix = query.get("comment.startswith");
  const matching = [...env.store.records.values()].filter(
    (record) =>
      (name === undefined || record.name === name) &&
      (type === null || record.type === type) &&
      (commentPrefix === null || (record.comment ?? "").startsWith(commentPrefix)),
  );
  const result = matching.slice((page - 1) * perPage, page * perPage).map(present);
  return json(
    200,
    envelope(result, {
      result_info: { page, per_page: perPage, count: result.length, total_count: matching.length, total_pages: Math.ceil(matching.length / perPage) },
    }),
  );
}

const RECORDS = `${API_PREFIX}/zones/:zone/dns_records`;

const routes: Route<Handler>[] = [
  { method: "GET", pattern: RECORDS, handle: (env, request) => list(env, request) },
  {
    method: "POST",
    pattern: RECORDS,
    handle: (env, request) => {
      const body = readRecord(env, request, recordBody);
      checkContent(body.type, body.content);
      const now = new Date().toISOString();
      const record: StoredRecord = {
        id: env.store.newId(),
        type: body.type,
        name: body.name,
        content: body.content,
        ttl: body.ttl ?? 1,
        proxied: body.proxied ?? false,
        comment: body.comment ?? null,
        createdOn: now,
        modifiedOn: now,
        commentModifiedOn: body.comment === undefined ? null : now,
      };
      env.store.records.set(record.id, record);
      return json(200, envelope(present(record)));
    },
  },
  {
    method: "PATCH",
    pattern: `${RECORDS}/:id`,
    handle: (env, request, { id }) => {
      const record = existing(env, id!);
      const body = readRecord(env, request, recordBody.partial());
      const type = body.type ?? record.type;
      const content = body.content ?? record.content;
      checkContent(type, content);
      const now = new Date().toISOString();
      Object.assign(record, {
        type,
        content,
        name: body.name ?? record.name,
        ttl: body.ttl ?? record.ttl,
        proxied: body.proxied ?? record.proxied,
        modifiedOn: now,
        ...(body.comment === undefined || body.comment === record.comment ? {} : { comment: body.comment, commentModifiedOn: now }),
      });
      return json(200, envelope(present(record)));
    },
  },
  {
    method: "DELETE",
    pattern: `${RECORDS}/:id`,
    handle: (env, _request, { id }) => {
      existing(env, id!);
      env.store.records.delete(id!);
      return json(200, envelope({ id }));
    },
  },
];

function errorAnswer(error: CloudflareError, headers: Record<string, string> = {}): Outgoing {
  return json(error.status, { success: false, errors: [{ code: error.code, message: error.message }], messages: [], result: null }, headers);
}

/**
 * An API request: authenticated, scoped to the zone, then any fault queued (null: a timeout, the
 * request is never answered), then the endpoint.
 */
export function handleApi(request: Incoming, env: Env): Outgoing | null {
  try {
    const found = findRoute(routes, request);
    if (!found) throw new CloudflareError(404, 7003, `No route for ${request.method} ${request.path}.`);
    if (header(request, "authorization") !== `Bearer ${env.apiToken}`) throw new CloudflareError(401, 10000, "Authentication error");
    if (found.params.zone !== env.store.zoneId) throw new CloudflareError(403, 10000, "Authentication error");
    const fault = env.store.takeFault();
    if (fault?.kind === "timeout") return null;
    if (fault?.kind === "status") {
      const retryAfter: Record<string, string> = fault.retryAfterSeconds === undefined ? {} : { "Retry-After": String(fault.retryAfterSeconds) };
      return errorAnswer(
        new CloudflareError(
          fault.status,
          fault.status === 429 ? 971 : 10001,
          fault.status === 429 ? "Please wait and consider throttling your request speed" : "Internal error",
        ),
        retryAfter,
      );
    }
    env.store.requests.push({
      method: request.method,
      path: request.path,
      query: request.query,
      body: request.body ? (JSON.parse(request.body) as unknown) : null,
    });
    return found.handle(env, request, found.params);
  } catch (error) {
    if (error instanceof CloudflareError) return errorAnswer(error);
    if (error instanceof SyntaxError || error instanceof z.ZodError) return errorAnswer(new CloudflareError(400, 9207, "Request body is invalid."));
    throw error;
  }
}
