import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../http/context";
import { requireSession } from "../http/session";
import { parseWith, readJson } from "../http/validation";
import { listRooms, listRoomsQuery, purgeRoom, setRoomBlocked } from "../servers/rooms";
import { reply } from "./server-users";

const serverParam = z.object({ id: z.string().min(1).max(128) });
const roomParams = serverParam.extend({ roomId: z.string().min(1).max(300) });
/** The room's id, typed again: what confirms a purge. */
const purgeBody = z.strictObject({ confirm: z.string().max(300).optional() });

// A homeserver's rooms, for its owner (mounted under /api/servers): metadata, a block, a purge.
// Each is a job on the host; a request waits a few seconds for it, then answers 202 with the job.
export const serverRoomRoutes = new Hono<AppEnv>()
  .get("/:id/rooms", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { id: serverId } = parseWith(serverParam, c.req.param());
    return reply(c, await listRooms(ctx, user, serverId, parseWith(listRoomsQuery, c.req.query())));
  })
  .post("/:id/rooms/:roomId/block", requireSession, async (c) => {
    const { id: serverId, roomId } = parseWith(roomParams, c.req.param());
    return reply(c, await setRoomBlocked(c.var.ctx, c.var.user, serverId, roomId, true));
  })
  .post("/:id/rooms/:roomId/unblock", requireSession, async (c) => {
    const { id: serverId, roomId } = parseWith(roomParams, c.req.param());
    return reply(c, await setRoomBlocked(c.var.ctx, c.var.user, serverId, roomId, false));
  })
  .post("/:id/rooms/:roomId/purge", requireSession, async (c) => {
    const { id: serverId, roomId } = parseWith(roomParams, c.req.param());
    // No body is no confirmation: the answer says what a purge would delete.
    const { confirm } = (await c.req.text()).trim() === "" ? {} : await readJson(c, purgeBody);
    return reply(c, await purgeRoom(c.var.ctx, c.var.user, serverId, roomId, confirm));
  });
