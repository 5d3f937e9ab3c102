import { and, eq, isNotNull, isNull, ne } from "drizzle-orm";
import { audit } from "../audit/audit";
import type { Database } from "../db/client";
import { hosts, type Host } from "../db/schema";
import { RECOVERED_ADMITTED_SHARE, RECOVERED_AVAILABLE_SHARE, TIGHT_AVAILABLE_SHARE } from "../servers/admission";
import { roomOn, type HostMemory } from "../servers/placement";

// A host gets tight when its homeservers grew beyond what it gives them (placement never admits
// that far, so they grew after), or when it reports little memory available itself. A tight host
// takes no new homeservers (hasRoomSql reads hosts.tightSince) until it recovers; the operator is
// told once each way, in the audit log and the logs, and may drain it.

/** Why a host with these figures is tight; null when it is not. */
export function tightness(host: Pick<Host, "memoryMiB">, memory: HostMemory): "homeservers_grew" | "host_memory_low" | null {
  if (memory.admittedMiB > memory.capacityMiB) return "homeservers_grew";
  if (memory.reportedAvailableMiB !== null && memory.reportedAvailableMiB < host.memoryMiB * TIGHT_AVAILABLE_SHARE) return "host_memory_low";
  return null;
}

/** Whether a tight host with these figures has room again, with a margin so that a host at the edge does not flap. */
function recovered(host: Pick<Host, "memoryMiB">, memory: HostMemory): boolean {
  return (
    memory.admittedMiB <= memory.capacityMiB * RECOVERED_ADMITTED_SHARE &&
    (memory.reportedAvailableMiB === null || memory.reportedAvailableMiB >= host.memoryMiB * RECOVERED_AVAILABLE_SHARE)
  );
}

/** Sets the host's tightSince (or clears it, for null) unless it is so already: whether this call changed it, so that of two reviews at once only one tells. */
async function markTight(db: Database, hostId: string, since: Date | null): Promise<boolean> {
  const [changed] = await db
    .update(hosts)
    .set({ tightSince: since })
    .where(and(eq(hosts.id, hostId), since ? isNull(hosts.tightSince) : isNotNull(hosts.tightSince)))
    .returning({ id: hosts.id });
  return changed !== undefined;
}

/** Tells the operator: an audit entry, and a log line of the same name. */
async function tell(db: Database, host: Host, now: Date, action: "host.tight" | "host.tight_cleared", detail: Record<string, unknown>) {
  await audit(db, now, "system", action, host.id, detail);
  console.warn(JSON.stringify({ event: action.replace(".", "_"), hostId: host.id, host: host.name, ...detail }));
}

/** Marks the host tight, or no longer tight, as its figures now say; tells the operator of a change once. */
export async function reviewTightness(db: Database, host: Host, now: Date): Promise<void> {
  const { memory } = await roomOn(db, host, now);
  const figures = { admittedMiB: memory.admittedMiB, capacityMiB: memory.capacityMiB, reportedAvailableMiB: memory.reportedAvailableMiB };
  if (host.tightSince === null) {
    const reason = tightness(host, memory);
    if (reason && (await markTight(db, host.id, now))) await tell(db, host, now, "host.tight", { reason, ...figures });
  } else if (recovered(host, memory) && (await markTight(db, host.id, null))) {
    await tell(db, host, now, "host.tight_cleared", figures);
  }
}

/** Reviews every host not revoked: after the hourly refresh of measured memory, and for hosts whose homeservers moved or went away. */
export async function reviewAllHosts(db: Database, now: Date): Promise<void> {
  for (const host of await db.select().from(hosts).where(ne(hosts.status, "revoked"))) await reviewTightness(db, host, now);
}
