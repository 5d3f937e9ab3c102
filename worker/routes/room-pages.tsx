import { Hono, type Context } from "hono";
import { matrixRoomId } from "../../protocol/jobs";
import type { AppEnv } from "../http/context";
import { handleForm, submitForm } from "../http/forms";
import { requireLogin, type SessionAppEnv } from "../http/session";
import { parseWith } from "../http/validation";
import { MessagePage, noSuchServerPage } from "../pages/auth";
import { PurgeRoomPage, RoomJobPage, roomJobPath, RoomsPage, type RoomsQuery } from "../pages/rooms";
import { PURGE_DELETES, type RoomView } from "../servers/room-jobs";
import { listRooms, listRoomsQuery, purgeRoom, roomIdOf, roomJob, setRoomBlocked } from "../servers/rooms";
import { matrixServerNameOf, ownedServer } from "../servers/servers";

// A homeserver's rooms as pages (mounted under /servers), for its logged-in owner: the same
// services as the JSON API. A job the host has not finished within the request's wait goes to its
// own page, which says how it goes.

type RoomsPageContext = Context<SessionAppEnv>;

const DEFAULT_QUERY: RoomsQuery = { order: "members", from: 0, limit: 25 };

/** The server's page name, or a 404 for a server that is not the caller's. */
async function owned(c: RoomsPageContext) {
  const server = await ownedServer(c.var.ctx.db, c.var.user.id, c.req.param("id")!);
  return { serverId: server.id, serverName: matrixServerNameOf(c.var.ctx.config, server) };
}

/** Runs a rooms page; a server that is not the caller's gets the same page as one that does not exist. */
function roomsPage(c: RoomsPageContext, action: () => Promise<Response>) {
  return handleForm(c, action, noSuchServerPage(c.var.user));
}

/** What a block did, for the list it redirects to: only ever about a room id (the link is anyone's to make). */
function blockNotice(done: string | undefined, roomId: string | undefined): string | undefined {
  if ((done !== "blocked" && done !== "unblocked") || !matrixRoomId.safeParse(roomId).success) return undefined;
  return done === "blocked"
    ? `${roomId} is blocked: nobody on your homeserver can join it or be invited to it.`
    : `${roomId} is unblocked: your homeserver's users can join it again.`;
}

function purgeOutcome(result: { roomId: string; membersRemoved: number; membersNotRemoved: number; deleted: string[] }): string {
  const notRemoved = result.membersNotRemoved > 0 ? `, ${result.membersNotRemoved} could not be` : "";
  return `${result.roomId} is purged. ${result.membersRemoved} local members were removed from it${notRemoved}. Deleted: ${result.deleted.join("; ")}.`;
}

export const roomPageRoutes = new Hono<AppEnv>()
  .get("/:id/rooms", requireLogin, (c) =>
    roomsPage(c, async () => {
      const server = await owned(c);
      const { done, room, ...rest } = c.req.query();
      const notice = blockNotice(done, room);
      return handleForm(
        c,
        async () => {
          const query = parseWith(listRoomsQuery, rest);
          const result = await listRooms(c.var.ctx, c.var.user, server.serverId, query);
          if ("done" in result) {
            const listed = result.done as { rooms: RoomView[]; total: number; nextFrom: number | null };
            return c.html(<RoomsPage user={c.var.user} {...server} query={query} rooms={listed} notice={notice} />);
          }
          return c.html(<RoomsPage user={c.var.user} {...server} query={query} pending={{ ...result.pending, progress: null, progressMessage: null }} />);
        },
        (error) => <RoomsPage user={c.var.user} {...server} query={DEFAULT_QUERY} error={error} />,
      );
    }),
  )
  .get("/:id/rooms/jobs/:jobId", requireLogin, (c) =>
    roomsPage(c, async () => {
      const server = await owned(c);
      const job = await roomJob(c.var.ctx, c.var.user, server.serverId, c.req.param("jobId"));
      if (job.kind === "homeserver.rooms.list" && job.status === "succeeded" && job.listed) {
        const { search, order, from, limit } = job.listed;
        const listed = job.result as { rooms: RoomView[]; total: number; nextFrom: number | null };
        return c.html(<RoomsPage user={c.var.user} {...server} query={{ search, order, from, limit }} rooms={listed} />);
      }
      const result = job.result as { roomId: string; blocked?: boolean; membersRemoved: number; membersNotRemoved: number; deleted: string[] } | null;
      const outcome = !result
        ? undefined
        : result.blocked === undefined
          ? purgeOutcome(result)
          : blockNotice(result.blocked ? "blocked" : "unblocked", result.roomId);
      return c.html(<RoomJobPage user={c.var.user} {...server} job={job} outcome={outcome} />);
    }),
  )
  .post("/:id/rooms/:roomId/block", requireLogin, (c) => blockForm(c, true))
  .post("/:id/rooms/:roomId/unblock", requireLogin, (c) => blockForm(c, false))
  .get("/:id/rooms/:roomId/purge", requireLogin, (c) =>
    roomsPage(c, async () => {
      const server = await owned(c);
      const roomId = roomIdOf(c.req.param("roomId"));
      return c.html(<PurgeRoomPage user={c.var.user} {...server} roomId={roomId} deletes={PURGE_DELETES} />);
    }),
  )
  .post("/:id/rooms/:roomId/purge", requireLogin, (c) =>
    roomsPage(c, async () => {
      const server = await owned(c);
      const roomId = roomIdOf(c.req.param("roomId"));
      return submitForm(
        c,
        async (fields) => {
          const result = await purgeRoom(c.var.ctx, c.var.user, server.serverId, roomId, fields.confirm);
          if (!("done" in result)) return c.redirect(roomJobPath(server.serverId, result.pending.id), 303);
          const purged = result.done as { roomId: string; membersRemoved: number; membersNotRemoved: number; deleted: string[] };
          return c.html(
            <MessagePage
              title="Room purged"
              message={purgeOutcome(purged)}
              viewer={c.var.user}
              next={{ href: `/servers/${server.serverId}/rooms`, label: "Back to the rooms" }}
            />,
          );
        },
        (error) => <PurgeRoomPage user={c.var.user} {...server} roomId={roomId} deletes={PURGE_DELETES} error={error} />,
      );
    }),
  );

/** Blocks or unblocks, then back to the list saying so (or to the job's page while the host works on it). */
function blockForm(c: RoomsPageContext, blocked: boolean) {
  return roomsPage(c, async () => {
    const server = await owned(c);
    return handleForm(
      c,
      async () => {
        const roomId = roomIdOf(c.req.param("roomId")!);
        const result = await setRoomBlocked(c.var.ctx, c.var.user, server.serverId, roomId, blocked);
        if (!("done" in result)) return c.redirect(roomJobPath(server.serverId, result.pending.id), 303);
        const params = new URLSearchParams({ done: blocked ? "blocked" : "unblocked", room: roomId });
        return c.redirect(`/servers/${server.serverId}/rooms?${params}`, 303);
      },
      (error) => <RoomsPage user={c.var.user} {...server} query={DEFAULT_QUERY} error={error} />,
    );
  });
}
