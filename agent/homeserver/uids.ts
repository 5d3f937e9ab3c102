// One non-root uid (= gid) per homeserver, from a range no host account uses.
// Allocations live in <stateDir>/homeserver-uids.json: stable across restarts,
// and never handed to another server, even after the first one is deleted
// (`next` only grows), so files left behind can never become another
// customer's.
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { z } from "zod";
import { writeFileAtomic } from "../atomic-file.ts";
import { HOST_NAMESPACE } from "./names.ts";

export interface UidRange {
  first: number;
  last: number;
}

export const DEFAULT_UID_RANGE: UidRange = { first: 200_000, last: 299_999 };

/**
 * The uids of the agent of a host namespace (names.ts): 100 000 of its own above the default
 * range, at 300 000 + 100 000 · (the namespace read as a base-36 number), so two agents
 * sharing a machine never give two tenants the same uid.
 */
export function uidRangeOf(hostNamespace: string | undefined): UidRange {
  if (hostNamespace === undefined) return DEFAULT_UID_RANGE;
  if (!HOST_NAMESPACE.test(hostNamespace)) throw new Error(`${JSON.stringify(hostNamespace)} is not a host namespace`);
  const first = 300_000 + 100_000 * Number.parseInt(hostNamespace, 36);
  return { first, last: first + 99_999 };
}

const fileSchema = z.strictObject({
  version: z.literal(1),
  next: z.number().int().positive(),
  servers: z.record(z.string(), z.number().int().positive()),
});
type UidFile = z.infer<typeof fileSchema>;

export function uidFilePath(stateDir: string): string {
  return join(stateDir, "homeserver-uids.json");
}

export class UidAllocator {
  private readonly path: string;
  private readonly range: UidRange;

  constructor(stateDir: string, range: UidRange = DEFAULT_UID_RANGE) {
    if (!(range.first > 0 && range.first <= range.last)) throw new Error(`invalid uid range ${range.first}–${range.last}`);
    this.path = uidFilePath(stateDir);
    this.range = range;
  }

  lookup(serverId: string): number | undefined {
    return this.read().servers[serverId];
  }

  /**
   * The server's uid, allocating the next free one the first time. `found` is
   * the owner of data the server already has on disk (a lost state file): it
   * is adopted when it is in the range and not another server's.
   */
  allocate(serverId: string, found?: number): number {
    const file = this.read();
    const known = file.servers[serverId];
    if (known !== undefined) return known;
    const taken = new Set(Object.values(file.servers));
    let uid: number;
    if (found !== undefined && found >= this.range.first && found <= this.range.last && !taken.has(found)) {
      uid = found;
    } else {
      uid = Math.max(file.next, this.range.first);
      while (taken.has(uid)) uid++;
    }
    if (uid > this.range.last) {
      throw new Error(`no uid left for homeservers in ${this.range.first}–${this.range.last} (see ${this.path})`);
    }
    file.servers[serverId] = uid;
    file.next = Math.max(file.next, uid + 1);
    this.write(file);
    return uid;
  }

  /** Forgets a server's uid (nothing of it is left: a failed import); `next` stays past it, so it is never handed out again. */
  forget(serverId: string): void {
    const file = this.read();
    if (!(serverId in file.servers)) return;
    delete file.servers[serverId];
    this.write(file);
  }

  private read(): UidFile {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return { version: 1, next: this.range.first, servers: {} };
      throw error;
    }
    const parsed = fileSchema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new Error(`${this.path} is invalid: ${parsed.error.issues[0]?.message ?? "unknown problem"}`);
    return parsed.data;
  }

  private write(file: UidFile): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    writeFileAtomic(this.path, `${JSON.stringify(file, null, 2)}\n`, 0o600);
  }
}
