import Cloudflare from "cloudflare";
import type { RecordResponse } from "cloudflare/resources/dns/records";
import { DnsError, managedComment, MANAGED_COMMENT_PREFIX, serverIdOfComment, type DesiredRecord, type DnsProvider, type DnsRecord } from "./provider";

export const CLOUDFLARE_API_URL = "https://api.cloudflare.com";

export interface CloudflareDnsOptions {
  /** A token scoped to DNS edit on this zone only. */
  apiToken: string;
  zoneId: string;
  /** The origin of Cloudflare's API, or (development, tests) of the local emulator. */
  apiUrl?: string;
  /** Per attempt. */
  timeoutMs?: number;
  /** Attempts after the first, for 408/409/429/5xx answers, timeouts and lost connections (the SDK's backoff: 0.5 s doubling, or Retry-After). */
  maxRetries?: number;
}

/** Short, for a change of host to reach resolvers soon (Cloudflare's minimum outside Enterprise). */
const TTL_SECONDS = 60;
const PAGE_SIZE = 1000;

/** An SDK failure in our words: its status, never its message, headers or request (which could carry the token). */
function reasonOf(error: unknown): DnsError {
  if (error instanceof DnsError) return error;
  if (error instanceof Cloudflare.APIConnectionTimeoutError) return new DnsError("Cloudflare did not answer in time");
  if (error instanceof Cloudflare.APIConnectionError) return new DnsError("Cloudflare could not be reached");
  if (error instanceof Cloudflare.NotFoundError) return new DnsError("Cloudflare has no such record", true);
  if (error instanceof Cloudflare.RateLimitError) return new DnsError("Cloudflare is limiting our requests (429)");
  if (error instanceof Cloudflare.AuthenticationError || error instanceof Cloudflare.PermissionDeniedError) {
    return new DnsError(`Cloudflare refused our API token (${error.status})`);
  }
  if (error instanceof Cloudflare.APIError) return new DnsError(`Cloudflare answered ${error.status ?? "without a status"}`);
  return new DnsError("Cloudflare's answer could not be read");
}

function toRecord(response: RecordResponse): DnsRecord | null {
  if (response.type !== "A" && response.type !== "AAAA") return null;
  return { id: response.id, type: response.type, name: response.name, content: response.content ?? "", serverId: serverIdOfComment(response.comment) };
}

/** Cloudflare DNS through the official SDK. */
export function cloudflareDns(options: CloudflareDnsOptions): DnsProvider {
  const client = new Cloudflare({
    apiToken: options.apiToken,
    baseURL: `${options.apiUrl ?? CLOUDFLARE_API_URL}/client/v4`,
    timeout: options.timeoutMs ?? 10_000,
    maxRetries: options.maxRetries ?? 2,
    // Its request logs could name what we send; ours say what matters.
    logLevel: "off",
  });
  const zone_id = options.zoneId;
  const body = (record: DesiredRecord) => ({
    zone_id,
    type: record.type,
    name: record.name,
    content: record.content,
    ttl: TTL_SECONDS,
    proxied: false,
    comment: managedComment(record.serverId),
  });
  const call = async <T>(work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (error) {
      throw reasonOf(error);
    }
  };
  const collect = (query: Omit<Cloudflare.DNS.RecordListParams, "zone_id">) =>
    call(async () => {
      const records: DnsRecord[] = [];
      for await (const response of client.dns.records.list({ zone_id, per_page: PAGE_SIZE, ...query })) {
        const record = toRecord(response);
        if (record) records.push(record);
      }
      return records;
    });
  const written = (response: RecordResponse) => {
    const record = toRecord(response);
    if (!record) throw new DnsError("Cloudflare's answer could not be read");
    return record;
  };

  return {
    listManaged: async () => (await collect({ comment: { startswith: MANAGED_COMMENT_PREFIX } })).filter((record) => record.serverId !== null),
    recordsNamed: (name) => collect({ name: { exact: name } }),
    create: (record) => call(async () => written(await client.dns.records.create(body(record)))),
    update: (id, record) => call(async () => written(await client.dns.records.edit(id, body(record)))),
    delete: async (id) => {
      try {
        await call(() => client.dns.records.delete(id, { zone_id }));
      } catch (error) {
        if (!(error instanceof DnsError && error.missing)) throw error;
      }
    },
  };
}
