import { audit } from "../audit/audit";
import type { WorkContext } from "../context";
import type { Server } from "../db/schema";
import { pointServerAt } from "../dns/records";
import { requireHost } from "../fleet/hosts";

/**
 * Points a homeserver's public name at the host that serves it: the one place where a move
 * switches where clients and other servers reach it (and where a move rolled back after its
 * switch points it back). Each host's proxy routes the name once the homeserver runs there (its
 * provision, restore and start route it), so what changes here is where the name resolves: its
 * DNS records. Idempotent: a recovered migration may switch again. Throws when the records could
 * not be pointed at the target (the provider's failures, after its retries): the move then rolls
 * back, and the source, which the name may still resolve to, serves again. Where no DNS provider is
 * configured (development's *.localhost) there is nothing to point.
 */
export async function switchRoute(ctx: WorkContext, server: Pick<Server, "id" | "name">, targetHostId: string): Promise<void> {
  const dns = await pointServerAt(ctx, server, await requireHost(ctx.db, targetHostId));
  if (dns?.state === "waiting") throw new Error(`DNS records not switched: ${dns.reason}`);
  await audit(ctx.db, ctx.now, "system", "server.route_switched", server.id, { hostId: targetHostId });
}
