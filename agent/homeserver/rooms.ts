// homeserver.rooms.*: a homeserver's rooms listed, blocked and purged, through
// Synapse's admin API as the service account (service-account.ts). Metadata
// only: no job reads a message. A room's name and canonical alias are
// reported only for a public room (anyone may join it, or it is published in
// the room directory); a private room's name is its members' business, so it
// leaves the host in no result, and a search never matches it.
import { setTimeout as sleep } from "node:timers/promises";
import type { JobPayload, JobResult } from "../../protocol/jobs.ts";
import { matrixRoomId } from "../../protocol/jobs.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import type { HomeserverNames } from "./names.ts";
import { administer } from "./service-account.ts";
import { type ListedRoom, MAX_ROOMS_PAGE, type RoomDeletion, type RoomsOrder, type SynapseAdmin } from "./synapse-admin.ts";

export type HomeserverRoom = JobResult<"homeserver.rooms.list">["rooms"][number];
type ListQuery = JobPayload<"homeserver.rooms.list">;

const ORDERS: Record<ListQuery["order"], RoomsOrder> = {
  members: "joined_members",
  local_members: "joined_local_members",
  state_events: "state_events",
};

/**
 * How many rooms a search looks through. Synapse matches any room's name, so the agent keeps only
 * the public ones, and pages through what is left itself.
 */
export const SEARCH_SCAN_LIMIT = 5000;

/** From a purge's start, the pause between two looks at how it goes. */
const PURGE_POLL_MS = { first: 250, max: 3000 };

const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;

/** Each room's creation time (its create event's) and whether it is blocked, in one query: the admin API has neither in its list. */
async function creationAndBlocks(
  core: HomeserverCore,
  names: HomeserverNames,
  roomIds: string[],
): Promise<Map<string, { createdAt: number | null; blocked: boolean }>> {
  const found = new Map<string, { createdAt: number | null; blocked: boolean }>();
  if (roomIds.length === 0) return found;
  const sql = [
    "SELECT r.id || '|' ||",
    "  COALESCE((SELECT e.origin_server_ts FROM current_state_events c JOIN events e USING (event_id)",
    "            WHERE c.room_id = r.id AND c.type = 'm.room.create' AND c.state_key = ''), -1) || '|' ||",
    "  (EXISTS (SELECT 1 FROM blocked_rooms b WHERE b.room_id = r.id))::int",
    `FROM unnest(ARRAY[${roomIds.map(sqlString).join(", ")}]::text[]) AS r(id);`,
    "",
  ].join("\n");
  const result = await core.psql(names, sql);
  if (result.exitCode !== 0) throw new Error(`reading rooms' creation and blocks failed: ${result.stderr.trim().slice(0, 300)}`);
  for (const line of result.stdout.split("\n")) {
    const match = /^(.+)\|(-?\d{1,16})\|([01])$/.exec(line.trim());
    if (match) found.set(match[1]!, { createdAt: match[2] === "-1" ? null : Number(match[2]), blocked: match[3] === "1" });
  }
  return found;
}

/** Anyone may join it, or it is in the room directory: its name is no secret from anyone. */
const isPublic = (room: ListedRoom) => room.public || room.join_rules === "public";

function reported(room: ListedRoom, extra: { createdAt: number | null; blocked: boolean } | undefined): HomeserverRoom {
  return {
    roomId: room.room_id,
    public: isPublic(room),
    name: isPublic(room) ? room.name : null,
    canonicalAlias: isPublic(room) ? room.canonical_alias : null,
    members: room.joined_members ?? 0,
    localMembers: room.joined_local_members ?? 0,
    encryption: room.encryption,
    stateEvents: room.state_events ?? 0,
    createdAt: extra?.createdAt ?? null,
    blocked: extra?.blocked ?? false,
  };
}

/** One page of rooms, and how many match: a room id, a public room's name or alias, or every room. */
async function matchingRooms(admin: SynapseAdmin, query: ListQuery): Promise<{ rooms: ListedRoom[]; total: number }> {
  const order = ORDERS[query.order];
  if (query.search === undefined) return admin.rooms({ from: query.from, limit: query.limit, order });
  if (matrixRoomId.safeParse(query.search).success) {
    const room = await admin.room(query.search);
    return { rooms: room && query.from === 0 ? [room] : [], total: room ? 1 : 0 };
  }
  const matched: ListedRoom[] = [];
  for (let from = 0; from < SEARCH_SCAN_LIMIT; from += MAX_ROOMS_PAGE) {
    const page = await admin.rooms({ from, limit: MAX_ROOMS_PAGE, order, search: query.search });
    matched.push(...page.rooms.filter(isPublic));
    if (page.rooms.length < MAX_ROOMS_PAGE || from + MAX_ROOMS_PAGE >= page.total) break;
  }
  return { rooms: matched.slice(query.from, query.from + query.limit), total: matched.length };
}

/** A page of the rooms the homeserver knows, largest first by the order asked; `from` and `nextFrom` are offsets in that order. */
export function listRooms(core: HomeserverCore, query: ListQuery, ctx: OperationContext): Promise<JobResult<"homeserver.rooms.list">> {
  return administer(core, query.serverId, ctx, async ({ admin, names }) => {
    const page = await matchingRooms(admin, query);
    const extras = await creationAndBlocks(
      core,
      names,
      page.rooms.map((room) => room.room_id),
    );
    const next = query.from + page.rooms.length;
    return {
      rooms: page.rooms.map((room) => reported(room, extras.get(room.room_id))),
      total: page.total,
      nextFrom: page.rooms.length > 0 && next < page.total ? next : null,
    };
  });
}

/** Blocks a room the homeserver knows (nobody here can join it or be invited any more; its members stay), or unblocks it. */
export function blockRoom(
  core: HomeserverCore,
  payload: JobPayload<"homeserver.rooms.block">,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.rooms.block">> {
  const { serverId, roomId, blocked } = payload;
  return administer(core, serverId, ctx, async ({ admin, log }) => {
    if (!(await admin.room(roomId))) return { outcome: "room_not_found" as const, roomId };
    await admin.setRoomBlocked(roomId, blocked);
    log.info(blocked ? "room blocked" : "room unblocked", { roomId });
    return { outcome: "done" as const, roomId, blocked };
  });
}

const running = (deletion: RoomDeletion) => deletion.status === "scheduled" || deletion.status === "active";

/**
 * Deletes a room with Synapse's room deletion: its local members leave it, then its events, state,
 * aliases and every other trace in the database are purged (its block, if any, stays). Follows a
 * deletion already running for the room rather than starting another (a job run again does that).
 * The server's lock is held to start it and for each look at it, not in between, so other jobs
 * for the server run meanwhile.
 */
export async function purgeRoom(
  core: HomeserverCore,
  payload: JobPayload<"homeserver.rooms.purge">,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.rooms.purge">> {
  const { serverId, roomId } = payload;
  const started = await administer(core, serverId, ctx, async ({ admin, log }) => {
    const underway = (await admin.roomDeletions(roomId)).find(running);
    if (underway) return { deleteId: underway.delete_id, localMembers: null };
    const room = await admin.room(roomId);
    if (!room) return undefined;
    const deleteId = await admin.startRoomDeletion(roomId);
    log.info("room deletion started", { roomId, deleteId });
    return { deleteId, localMembers: room.joined_local_members ?? 0 };
  });
  if (!started) return { outcome: "room_not_found", roomId };
  ctx.progress(0.05, "the deletion is scheduled");

  let pause = PURGE_POLL_MS.first;
  for (;;) {
    await sleep(pause, undefined, { signal: ctx.signal });
    pause = Math.min(pause * 2, PURGE_POLL_MS.max);
    const deletion = await administer(core, serverId, ctx, ({ admin }) => admin.roomDeletion(started.deleteId));
    const removed = deletion.shutdown_room?.kicked_users.length ?? 0;
    const notRemoved = deletion.shutdown_room?.failed_to_kick_users.length ?? 0;
    if (deletion.status === "complete") {
      ctx.log?.info("room purged", { roomId, membersRemoved: removed, membersNotRemoved: notRemoved });
      return { outcome: "purged", roomId, membersRemoved: removed, membersNotRemoved: notRemoved };
    }
    if (!running(deletion)) throw new Error(`Synapse's deletion of ${roomId} ended ${deletion.status}`);
    const members = started.localMembers;
    if (members !== null && removed + notRemoved < members) {
      ctx.progress(0.05 + (0.6 * (removed + notRemoved)) / members, `${removed + notRemoved} of ${members} local members removed`);
    } else {
      ctx.progress(0.7, "local members removed; purging its events");
    }
  }
}
