import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { app } from "../../../worker/app";
import { createSession } from "../../../worker/auth/sessions";
import { workerConfig } from "../../../worker/config";
import { database } from "../../../worker/db/client";
import { call, ORIGIN, sessionCookie } from "../helpers";
import { manualBackup, signedHeaders } from "../backups/backup-helpers";
import { signStripe } from "../billing/stripe-helpers";
import { succeeded, type HostIdentity } from "../fleet/fleet-helpers";
import { runningServer } from "../servers/server-helpers";

// Every route the app has (read from the app itself, so a new route is covered the day it is
// added) is driven with malformed requests: bodies of every shape under right and wrong content
// types, broken multipart, junk path parameters and queries, with and without credentials, from a
// same-origin browser, from a client that is not a browser, and cross-site. Nothing may answer 5xx;
// API errors keep the documented shape, and a browser gets a page that says what was wrong.
// The table is explicit: every run sends the same requests in the same order.

interface Route {
  method: string;
  path: string;
}

/** The app's routes, without the middleware Hono lists under the method ALL. */
function appRoutes(): Route[] {
  const routes = new Map<string, Route>();
  for (const { method, path } of app.routes) if (method !== "ALL") routes.set(`${method} ${path}`, { method, path });
  return [...routes.values()];
}

const isApi = (path: string) => path.startsWith("/api/") || path.startsWith("/webhooks/");
const isSafe = (method: string) => method === "GET" || method === "HEAD";

// --- Bodies -------------------------------------------------------------------------------------

/** Every field name our forms and JSON bodies read, so that validators see the junk. */
const FIELDS = [
  "email",
  "password",
  "token",
  "newEmail",
  "currentPassword",
  "newPassword",
  "name",
  "region",
  "plan",
  "backupId",
  "confirm",
  "confirmName",
  "joinToken",
  "publicKey",
  "capacity",
  "agentVersion",
  "parts",
  "size",
  "sha256",
  "reason",
  "kind",
  "payload",
  "timeoutSeconds",
  "spec",
  "image",
  "expiresInMinutes",
  "localpart",
  "displayName",
  "erase",
  "usesAllowed",
  "expiresAt",
  "targetHostId",
];

/** Values that look right (the password is nobody's), so forms get past their field checks into the services. */
const PLAUSIBLE: Record<string, string> = {
  email: "fuzz@example.com",
  password: "not the password 123",
  token: "t".repeat(43),
  newEmail: "fuzz-new@example.com",
  currentPassword: "not the password 123",
  newPassword: "another long passphrase",
  name: "fuzz-name",
  region: "us-east",
  plan: "starter",
  backupId: "no-such-backup",
  confirm: "yes",
  confirmName: "fuzz-name",
};

const nested = (levels: number): unknown => (levels === 0 ? "x" : [nested(levels - 1)]);
const WRONG_TYPES: unknown[] = [42, true, null, {}, -1e308, ["nested", { array: [] }]];
const each = (value: (field: string, index: number) => unknown) => Object.fromEntries(FIELDS.map((field, index) => [field, value(field, index)]));

/** Shapes of a body, field name → value; each is sent in every encoding. */
const SHAPES: Record<string, Record<string, unknown>> = {
  plausible: each((field) => PLAUSIBLE[field] ?? "x"),
  "wrong types": each((_, index) => WRONG_TYPES[index % WRONG_TYPES.length]),
  "arrays for scalars": each((field) => [PLAUSIBLE[field] ?? "x", "second"]),
  "NUL, control and bidi characters": each((field) => `a\u0000b\r\n\u202e\u200b\ud800${PLAUSIBLE[field] ?? ""}\u0000`),
  "a 15 KB string": { ...each(() => ""), email: "e".repeat(15_000) },
  "a 100 KB string": { email: "e".repeat(100_000), password: "p" },
  "deep nesting": { email: nested(2_000), password: nested(10) },
  "prototype keys": JSON.parse('{"__proto__": {"role": "operator"}, "constructor": {"prototype": {"role": "operator"}}, "toString": "x"}'),
};

const BOUNDARY = "fuzzboundary";
const JSON_TYPE = "application/json";
const FORM_TYPE = "application/x-www-form-urlencoded";
const MULTIPART_TYPE = `multipart/form-data; boundary=${BOUNDARY}`;

/** As a browser would post it: arrays repeat the field as name[], objects become name[key]. */
function asForm(shape: Record<string, unknown>): string {
  const params = new URLSearchParams();
  const add = (name: string, value: unknown): void => {
    if (Array.isArray(value)) for (const item of value) add(`${name}[]`, item);
    else if (value !== null && typeof value === "object") for (const [key, item] of Object.entries(value)) add(`${name}[${key}]`, item);
    else params.append(name, String(value));
  };
  for (const [name, value] of Object.entries(shape)) add(name, value);
  return params.toString();
}

function multipart(parts: { name: string; value: string; filename?: string }[]): string {
  const encoded = parts.map(({ name, value, filename }) =>
    filename === undefined
      ? `--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`
      : `--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"; filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n${value}\r\n`,
  );
  return `${encoded.join("")}--${BOUNDARY}--\r\n`;
}

const asMultipart = (shape: Record<string, unknown>) => multipart(Array.from(new URLSearchParams(asForm(shape)), ([name, value]) => ({ name, value })));

interface BodyCase {
  label: string;
  body: string | Uint8Array;
  contentType: string | null;
}

const ENCODINGS = {
  JSON: { encode: JSON.stringify, type: JSON_TYPE, mislabels: [FORM_TYPE, "text/plain", null] },
  urlencoded: { encode: asForm, type: FORM_TYPE, mislabels: [JSON_TYPE] },
  // A boundary that is not the body's, none at all, one past RFC 2046's 70 characters.
  multipart: {
    encode: asMultipart,
    type: MULTIPART_TYPE,
    mislabels: ["multipart/form-data; boundary=another", "multipart/form-data", `multipart/form-data; boundary=${"b".repeat(200)}`],
  },
};

/** Every shape goes as JSON and urlencoded; multipart is parsed into the same fields, so a few shapes show its parser holds. */
const ENCODINGS_OF = (shape: string) =>
  (["plausible", "arrays for scalars", "NUL, control and bidi characters"].includes(shape)
    ? ["JSON", "urlencoded", "multipart"]
    : ["JSON", "urlencoded"]) as (keyof typeof ENCODINGS)[];

const labelled = (contentType: string | null) => `labelled ${contentType?.slice(0, 40) ?? "nothing"}`;

/** Malformed bodies × content types. */
const BODY_CASES: BodyCase[] = [
  ...Object.entries(SHAPES).flatMap(([shape, fields]) =>
    ENCODINGS_OF(shape).map((name) => ({ label: `${shape} as ${name}`, body: ENCODINGS[name].encode(fields), contentType: ENCODINGS[name].type })),
  ),
  ...Object.entries(ENCODINGS).flatMap(([name, encoding]) =>
    encoding.mislabels.map((contentType) => ({ label: `${name} ${labelled(contentType)}`, body: encoding.encode(SHAPES.plausible!), contentType })),
  ),
  ...[JSON_TYPE, FORM_TYPE, MULTIPART_TYPE, null].map((contentType) => ({ label: `an empty body ${labelled(contentType)}`, body: "", contentType })),
  ...[JSON_TYPE, FORM_TYPE].map((contentType) => ({
    label: `invalid UTF-8 ${labelled(contentType)}`,
    body: new Uint8Array([0xff, 0xfe, 0x00, 0xc3, 0x28, 0xa0, 0xa1]),
    contentType,
  })),
  ...["[]", "null", '{"email": "a', "{".repeat(5_000)].map((body) => ({ label: `JSON ${body.slice(0, 12)}`, body, contentType: JSON_TYPE })),
  { label: "JSON labelled UTF-16", body: JSON.stringify(SHAPES.plausible), contentType: "application/json; charset=utf-16" },
  { label: "multipart without its closing boundary", body: asMultipart(SHAPES.plausible!).replace(`--${BOUNDARY}--\r\n`, ""), contentType: MULTIPART_TYPE },
  { label: "multipart with a part lacking its headers", body: `--${BOUNDARY}\r\n\r\nvalue\r\n--${BOUNDARY}--\r\n`, contentType: MULTIPART_TYPE },
  {
    label: "multipart with files for every field",
    body: multipart(Object.entries(PLAUSIBLE).map(([name, value]) => ({ name, value, filename: "field.txt" }))),
    contentType: MULTIPART_TYPE,
  },
  {
    label: "multipart with NUL in names",
    body: multipart([
      { name: "email\u0000", value: "a" },
      { name: "\u0000", value: "b" },
    ]),
    contentType: MULTIPART_TYPE,
  },
];

/** A few of them: for other ids, other clients, and callers a route turns away before reading the body. */
const FEW_BODY_CASES = ["plausible as JSON", "NUL, control and bidi characters as urlencoded", "multipart labelled multipart/form-data; boundary=another"].map(
  (label) => BODY_CASES.find((bodyCase) => bodyCase.label === label)!,
);

const QUERIES = ["", `?range=%00&limit=1e999&notice=__proto__&token=%ff${"t".repeat(4_000)}&host=..%2F&to[]=x`];

// --- Who is calling ----------------------------------------------------------------------------

/** What a same-origin browser sends: a page's form post under our no-referrer policy, or a page's own fetch. */
const browser = (path: string): Record<string, string> =>
  isApi(path)
    ? { accept: "*/*", origin: ORIGIN, "sec-fetch-site": "same-origin" }
    : { accept: "text/html,application/xhtml+xml,*/*;q=0.8", origin: "null", "sec-fetch-site": "same-origin" };
const crossSite = (path: string): Record<string, string> => ({ ...browser(path), origin: "https://evil.example", "sec-fetch-site": "cross-site" });

/** A verified, subscribed customer (an operator too, to reach /api/admin) with a running homeserver on its own host. */
interface Customer {
  host: HostIdentity;
  userId: string;
  serverId: string;
  /** An unfinished backup: the agent's upload routes have something of their host's to reach. */
  backupId: string;
  jobId: string;
  workloadId: string;
  cookie: string;
}

async function newCustomer(): Promise<Customer> {
  const { agent, host, owner, id } = await runningServer();
  // Its homeserver's users, registration tokens and rooms answer at once, as a real agent's do: every request reaches the end of its route.
  agent.answerJobs((job) => (/^homeserver\.(users|registration_tokens|rooms)\./.test(job.kind) ? succeeded(job) : undefined));
  const userId = (await env.DB.prepare("SELECT id FROM users WHERE email = ?").bind(owner.email).first<{ id: string }>())!.id;
  await env.DB.prepare("UPDATE users SET role = 'operator' WHERE id = ?").bind(userId).run();
  const backup = await manualBackup(owner.cookie, id, agent);
  const workload = await env.DB.prepare("SELECT id FROM workloads WHERE host_id = ?").bind(host.hostId).first<{ id: string }>();
  return { host, userId, serverId: id, backupId: backup.payload.backupId, jobId: backup.id, workloadId: workload!.id, cookie: await newSession(userId) };
}

/** A fresh session, without a log-in's KDF. */
async function newSession(userId: string): Promise<string> {
  return (await createSession(database(env.DB), workerConfig(env).sessionKeyringSecret, userId, new Date())).cookie.value;
}

/** Path parameters: the customer's own records (reaching the deepest code), then an id of nothing, then junk. */
function pathsFor(path: string, customer: Customer): { label: string; path: string }[] {
  if (!path.includes(":")) return [{ label: "", path }];
  const own = (name: string) => {
    if (name === "backupId") return customer.backupId;
    if (name === "partNumber") return "1";
    if (path.startsWith("/api/admin/hosts/")) return customer.host.hostId;
    if (path.startsWith("/api/admin/jobs/")) return customer.jobId;
    if (path.startsWith("/api/admin/workloads/")) return customer.workloadId;
    return customer.serverId;
  };
  const fill = (value: (name: string) => string) => path.replace(/:(\w+)/g, (_, name: string) => value(name));
  return [
    { label: "(its own records)", path: fill(own) },
    { label: "(an id of nothing)", path: fill(() => "00000000-0000-4000-8000-000000000000") },
    { label: "(a junk id)", path: fill(() => `%00%ff..%2F%E2%80%AE${"9".repeat(300)}`) },
  ];
}

/** A route's credential: a session; for agents, their host's signature; for Stripe, its signature. */
async function credentials(customer: Customer, method: string, path: string, body: string | Uint8Array): Promise<Record<string, string>> {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  if (path.startsWith("/api/agent/")) return signedHeaders(customer.host, method, new URL(path, ORIGIN).pathname, bytes);
  if (path.startsWith("/webhooks/")) return { "stripe-signature": await signStripe(new TextDecoder().decode(bytes), Math.floor(Date.now() / 1000)) };
  return {};
}

interface Sent {
  method: string;
  path: string;
  label: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
  /** The customer whose session goes with it, if any. */
  as: Customer | null;
}

function isErrorShape(type: string, text: string): boolean {
  if (!type.startsWith("application/json")) return false;
  try {
    const { error, ...rest } = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    return (
      Object.keys(rest).length === 0 &&
      Object.keys(error ?? {})
        .sort()
        .join() === "code,message" &&
      typeof error?.code === "string" &&
      typeof error.message === "string" &&
      error.message.length > 0
    );
  } catch {
    return false;
  }
}

/** Sends one request; returns whether it turned a stranger away, and what was wrong with the answer, if anything. */
async function send(request: Sent): Promise<{ refusedStranger: boolean; problem: string | null }> {
  const response = await call(request.path, {
    method: request.method,
    ...(request.body === undefined ? {} : { rawBody: request.body }),
    headers: request.headers,
    cookie: request.as?.cookie ?? null,
  });
  // Log-out routes end the session: the next request gets a new one.
  if (request.as && sessionCookie(response) === "") request.as.cookie = await newSession(request.as.userId);
  const { status } = response;
  const refusedStranger = status === 401 || (status === 303 && response.headers.get("location") === "/login");
  const type = response.headers.get("content-type") ?? "";
  if (type.startsWith("text/event-stream")) {
    await response.body?.cancel();
    return { refusedStranger, problem: null };
  }
  return { refusedStranger, problem: problemWith(request, status, type, await response.text()) };
}

/** What is wrong with an answer, if anything. */
function problemWith(request: Sent, status: number, type: string, text: string): string | null {
  const describe = `${request.method} ${request.path.slice(0, 100)} ${request.label} ${request.as ? "with" : "without"} credentials → ${status}: ${text.slice(0, 200)}`;
  if (status >= 500) return describe;
  if (status < 400) return null;
  if (isApi(request.path)) return isErrorShape(type, text) ? null : `not the error shape: ${describe}`;
  const page = type.startsWith("text/html") && text.includes('role="alert"');
  // A browser gets a page with the reason; other clients may get the middleware's error shape.
  if (request.headers.accept?.includes("text/html")) return page ? null : `not a page with the reason: ${describe}`;
  return page || isErrorShape(type, text) ? null : `neither a page nor the error shape: ${describe}`;
}

/**
 * Drives every route with every path variant and the whole table of bodies (or queries), as
 * `customer` or, without credentials, as a stranger using the customer's ids. Returns the problems.
 */
async function sweep(customer: Customer, withCredentials: boolean): Promise<{ problems: string[]; sent: number }> {
  const as = withCredentials ? customer : null;
  const problems: string[] = [];
  let sent = 0;
  const drive = async (request: Omit<Sent, "as">) => {
    sent++;
    const result = await send({ ...request, as });
    if (result.problem) problems.push(result.problem);
    return result;
  };
  for (const route of appRoutes()) {
    for (const [variant, { label, path }] of pathsFor(route.path, customer).entries()) {
      if (isSafe(route.method)) {
        for (const query of QUERIES) {
          const target = `${path}${query}`;
          const headers = { ...browser(target), ...(as ? await credentials(customer, route.method, target, "") : {}) };
          await drive({ method: route.method, path: target, label: `${label} ${query ? "junk query" : ""}`, headers });
        }
        continue;
      }
      let cases = variant === 0 ? BODY_CASES : FEW_BODY_CASES;
      for (let index = 0; index < cases.length; index++) {
        const bodyCase = cases[index]!;
        const headers: Record<string, string> = {
          ...browser(path),
          ...(bodyCase.contentType === null ? {} : { "content-type": bodyCase.contentType }),
          ...(as ? await credentials(customer, route.method, path, bodyCase.body) : {}),
        };
        const { refusedStranger } = await drive({ method: route.method, path, label: `${label} ${bodyCase.label}`, headers, body: bodyCase.body });
        // A route that turns strangers away before it reads a body gets only a few more of them.
        if (index === 0 && !as && refusedStranger) cases = FEW_BODY_CASES;
      }
    }
  }
  return { problems, sent };
}

describe("malformed requests to every route", () => {
  let customer: Customer;

  beforeAll(async () => {
    customer = await newCustomer();
  });

  it("takes the routes from the app itself", () => {
    const routes = appRoutes().map(({ method, path }) => `${method} ${path}`);
    for (const route of [
      "POST /signup",
      "POST /servers/:id/restore",
      "POST /billing/checkout",
      "PUT /api/agent/backups/:backupId/parts/:partNumber",
      "POST /webhooks/stripe",
      "GET /api/health",
    ]) {
      expect(routes).toContain(route);
    }
    expect(routes.length).toBeGreaterThan(80);
  });

  it("never answers 5xx, and answers errors in the documented shape or as a page with the reason", { timeout: 300_000 }, async () => {
    // Side by side: a stranger's requests cannot touch the customer's state.
    const sweeps = await Promise.all([sweep(customer, false), sweep(customer, true)]);
    expect(sweeps.flatMap(({ problems }) => problems)).toEqual([]);
    expect(sweeps.reduce((total, { sent }) => total + sent, 0)).toBeGreaterThan(3_000);
  });

  it("refuses unsafe requests from other sites with a 403, and holds for clients that are not browsers", async () => {
    const problems: string[] = [];
    for (const route of appRoutes().filter(({ method }) => !isSafe(method))) {
      const { path } = pathsFor(route.path, customer)[0]!;
      for (const bodyCase of FEW_BODY_CASES) {
        const contentType: Record<string, string> = bodyCase.contentType === null ? {} : { "content-type": bodyCase.contentType };
        const refused = await call(path, {
          method: route.method,
          rawBody: bodyCase.body,
          headers: { ...crossSite(path), ...contentType },
          cookie: customer.cookie,
        });
        const refusal = await refused.text();
        if (refused.status !== 403 || !refusal.includes("Cross-site request refused.")) {
          problems.push(`${route.method} ${path} ${bodyCase.label} cross-site → ${refused.status}: ${refusal.slice(0, 200)}`);
        }
        const { problem } = await send({
          method: route.method,
          path,
          label: `${bodyCase.label} from a client that is not a browser`,
          headers: contentType,
          body: bodyCase.body,
          as: customer,
        });
        if (problem) problems.push(problem);
      }
    }
    expect(problems).toEqual([]);
  });
});
