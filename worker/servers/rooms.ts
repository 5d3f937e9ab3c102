import { z } from "zod";
import { matrixRoomId, ROOM_ORDERS } from "../../protocol/jobs";
import type { WorkContext } from "../context";
import type { User } from "../db/schema";
import { badRequest, notFound } from "../errors";
import { getJob, payloadOf } from "../fleet/jobs";
import { PURGE_DELETES } from "./room-jobs";
import { administeredServer, administrationJob, answer, pageQuery, run, throttle } from "./users";

// A homeserver's rooms, for its owner: what we can see is metadata only (never a message, nor a
// private room's name), and, for abuse, a room blocked or purged. Each is a job the host's agent
// runs against Synapse's admin API (agent/homeserver/rooms.ts).

export const listRoomsQuery = z.strictObject({
  /** A room id, or part of a public room's name or alias; blank is no search. */
  search: z
    .string()
    .trim()
    .max(255)
    .optional()
    .transform((s) => s || undefined),
  order: z.enum(ROOM_ORDERS).default("members"),
  ...pageQuery,
});

/** The room id of a path, or a 400 for what is no Matrix room id (it goes into an admin API URL on the host). */
export function roomIdOf(roomId: string): string {
  if (!matrixRoomId.safeParse(roomId).success) throw badRequest("validation_failed", "roomId: a Matrix room id, !opaque:server.");
  return roomId;
}

export async function listRooms(ctx: WorkContext, user: User, serverId: string, query: z.output<typeof listRoomsQuery>) {
  const server = await administeredServer(ctx, user, serverId);
  await throttle(ctx, server, "homeserver_reads_server");
  const payload = { serverId: server.id, ...(query.search ? { search: query.search } : {}), order: query.order, from: query.from, limit: query.limit };
  return answer(server, await run(ctx, server, { kind: "homeserver.rooms.list", payload }));
}

/** Blocks a room (nobody on the homeserver can join it or be invited any more) or lifts that. */
export async function setRoomBlocked(ctx: WorkContext, user: User, serverId: string, roomId: string, blocked: boolean) {
  const server = await administeredServer(ctx, user, serverId);
  const room = roomIdOf(roomId);
  await throttle(ctx, server, "homeserver_changes_server");
  const job = await run(
    ctx,
    server,
    { kind: "homeserver.rooms.block", payload: { serverId: server.id, roomId: room, blocked } },
    { actor: `user:${user.id}`, action: blocked ? "homeserver_room.block" : "homeserver_room.unblock", detail: { roomId: room } },
  );
  return answer(server, job);
}

/** Purges a room once its owner confirmed by sending the room's id; without that, a 400 that says what it would delete. */
export async function purgeRoom(ctx: WorkContext, user: User, serverId: string, roomId: string, confirm: string | undefined) {
  const server = await administeredServer(ctx, user, serverId);
  const room = roomIdOf(roomId);
  if (confirm !== room) {
    throw badRequest(
      "confirmation_required",
      `Purging ${room} deletes ${PURGE_DELETES.join("; ")}. It cannot be undone. To purge it, send {"confirm": "${room}"}.`,
    );
  }
  await throttle(ctx, server, "homeserver_changes_server");
  const job = await run(
    ctx,
    server,
    { kind: "homeserver.rooms.purge", payload: { serverId: server.id, roomId: room } },
    { actor: `user:${user.id}`, action: "homeserver_room.purge", detail: { roomId: room } },
  );
  return answer(server, job);
}

/** One of this server's room jobs for its pages: as the job route presents it, with its progress and what it was asked. */
export async function roomJob(ctx: WorkContext, user: User, serverId: string, jobId: string) {
  const view = await administrationJob(ctx, user, serverId, jobId);
  const job = await getJob(ctx.db, view.id);
  if (!job || !view.kind.startsWith("homeserver.rooms.")) throw notFound("No such job.");
  return { ...view, progress: job.progress, progressMessage: job.progressMessage, listed: payloadOf(job, "homeserver.rooms.list") };
}
