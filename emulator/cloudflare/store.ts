// The emulator's state: one zone's A and AAAA records, the faults queued for the API's next
// requests, and what each API request was (method, path, body; never its headers).
import { randomBytes } from "node:crypto";

export type RecordType = "A" | "AAAA";

export interface StoredRecord {
  id: string;
  type: RecordType;
  name: string;
  content: string;
  ttl: number;
  proxied: boolean;
  comment: string | null;
  createdOn: string;
  modifiedOn: string;
  commentModifiedOn: string | null;
}

/** What the API answers instead, for as many requests as `count` says. */
export type Fault = { kind: "status"; status: number; retryAfterSeconds?: number; count: number } | { kind: "timeout"; count: number };

/** A fault as the control API takes it: `count` defaults to 1. */
export type FaultRequest = { [Kind in Fault["kind"]]: Omit<Extract<Fault, { kind: Kind }>, "count"> & { count?: number } }[Fault["kind"]];

export interface LoggedRequest {
  method: string;
  path: string;
  query: string;
  body: unknown;
}

export class Store {
  readonly records = new Map<string, StoredRecord>();
  faults: Fault[] = [];
  readonly requests: LoggedRequest[] = [];

  readonly zoneId: string;
  readonly zoneName: string;

  constructor(zoneId: string, zoneName: string) {
    this.zoneId = zoneId;
    this.zoneName = zoneName;
  }

  /** The fault the next API request meets, if any (each counts down). */
  takeFault(): Fault | undefined {
    const fault = this.faults[0];
    if (!fault) return undefined;
    fault.count--;
    if (fault.count <= 0) this.faults.shift();
    return fault;
  }

  newId(): string {
    // Cloudflare's record ids: 32 lower-case hex digits.
    return randomBytes(16).toString("hex");
  }
}
