// Shared set-up for the Cloudflare DNS emulator's tests: an emulator in-process on a free port,
// and Berth's adapter (the official SDK) pointed at it.
import { startCloudflareEmulator, type CloudflareEmulator } from "../../../emulator/cloudflare/server.ts";
import type { FaultRequest, LoggedRequest, StoredRecord } from "../../../emulator/cloudflare/store.ts";
import { cloudflareDns, type CloudflareDnsOptions } from "../../../worker/dns/cloudflare.ts";
import type { DnsProvider } from "../../../worker/dns/provider.ts";

export const TOKEN = "emulator-test-token-0123456789abcdefghijklmnopqrstuv";
export const ZONE_ID = "0123456789abcdef0123456789abcdef";
export const ZONE = "berth.example";

export interface CloudflareHarness {
  emulator: CloudflareEmulator;
  logs: string[];
  /** The adapter as the Worker makes it, with quick timeouts. */
  dns: (options?: Partial<CloudflareDnsOptions>) => DnsProvider;
  records: () => Promise<StoredRecord[]>;
  requests: () => Promise<LoggedRequest[]>;
  fault: (fault: FaultRequest) => Promise<void>;
  close: () => Promise<void>;
}

export async function startCloudflareHarness(): Promise<CloudflareHarness> {
  const logs: string[] = [];
  const emulator = await startCloudflareEmulator({ apiToken: TOKEN, zoneId: ZONE_ID, zoneName: ZONE, log: (line) => logs.push(line) });
  const control = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const response = await fetch(`${emulator.url}${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
    return (await response.json()) as T;
  };
  return {
    emulator,
    logs,
    dns: (options = {}) => cloudflareDns({ apiToken: TOKEN, zoneId: ZONE_ID, apiUrl: emulator.url, timeoutMs: 2_000, ...options }),
    records: () => control("GET", "/_emulator/records"),
    requests: () => control("GET", "/_emulator/requests"),
    fault: (fault) => control("POST", "/_emulator/faults", fault),
    close: () => emulator.close(),
  };
}
