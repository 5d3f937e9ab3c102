import type { JobResult, RoomJobKind } from "../../protocol/jobs";
import type { Job } from "../db/schema";
import { ApiError, notFound } from "../errors";

// What a finished room job answers the homeserver's owner, in our words (users.ts settles every
// administration job; the rooms' part is here, apart from the routes' service in rooms.ts).

/** What purging a room deletes, as the confirmation and the answer say it. */
export const PURGE_DELETES = [
  "every event of the room on this homeserver: its messages, reactions, edits and uploads' references (the files stay in the media store, with their uploaders)",
  "its state: its name, topic, members, permissions and encryption settings",
  "its local aliases and its entry in the room directory",
  "its local members are removed from it first; homeservers elsewhere keep their own copy of a room they share",
];

const roomNotFound = (roomId: string) => new ApiError(404, "room_not_found", `${roomId} is not a room this homeserver knows.`);

export type RoomView = ReturnType<typeof presentRoom>;

function presentRoom(room: JobResult<"homeserver.rooms.list">["rooms"][number]) {
  return { ...room, createdAt: room.createdAt === null ? null : new Date(room.createdAt).toISOString() };
}

/** The job's result if it succeeded, or the ApiError its failure answers with. */
type Succeeded = <K extends RoomJobKind>(job: Job, kind: K) => JobResult<K>;

/** What a finished room job answers its owner (or the ApiError it answers with). */
export function settleRoomJob(job: Job, succeeded: Succeeded) {
  switch (job.kind as RoomJobKind) {
    case "homeserver.rooms.list": {
      const { rooms, total, nextFrom } = succeeded(job, "homeserver.rooms.list");
      return { rooms: rooms.map(presentRoom), total, nextFrom };
    }
    case "homeserver.rooms.block": {
      const result = succeeded(job, "homeserver.rooms.block");
      if (result.outcome === "room_not_found") throw roomNotFound(result.roomId);
      return { roomId: result.roomId, blocked: result.blocked };
    }
    case "homeserver.rooms.purge": {
      const result = succeeded(job, "homeserver.rooms.purge");
      if (result.outcome === "room_not_found") throw roomNotFound(result.roomId);
      return {
        roomId: result.roomId,
        purged: true,
        membersRemoved: result.membersRemoved,
        membersNotRemoved: result.membersNotRemoved,
        deleted: PURGE_DELETES,
      };
    }
    default:
      throw notFound("No such job.");
  }
}
