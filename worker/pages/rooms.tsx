import type { User } from "../db/schema";
import type { RoomView } from "../servers/room-jobs";
import { ROOM_ORDERS } from "../../protocol/jobs";
import { Alert, Layout } from "./layout";
import { ServerNav } from "./server-nav";

// A homeserver's rooms as pages: metadata only, a block, and a purge behind a confirmation page.
// Every action is a plain form; a slow one shows its job's progress on a page that reloads by link.

export interface RoomsQuery {
  search?: string | undefined;
  order: (typeof ROOM_ORDERS)[number];
  from: number;
  limit: number;
}

/** A job still under way, or finished, as a page shows it. */
export interface RoomJobView {
  id: string;
  kind: string;
  status: "pending" | "succeeded" | "failed";
  progress: number | null;
  progressMessage: string | null;
  error: { message: string } | null;
}

const ORDER_LABELS: Record<RoomsQuery["order"], string> = {
  members: "members",
  local_members: "members on this homeserver",
  state_events: "state events",
};

const roomsPath = (serverId: string) => `/servers/${serverId}/rooms`;
const roomPath = (serverId: string, roomId: string, action: string) => `${roomsPath(serverId)}/${encodeURIComponent(roomId)}/${action}`;
export const roomJobPath = (serverId: string, jobId: string) => `${roomsPath(serverId)}/jobs/${jobId}`;

const when = (iso: string | null) => (iso ? `${new Date(iso).toLocaleString("en-US", { dateStyle: "medium", timeZone: "UTC" })}` : "not known");

function listLink(serverId: string, query: RoomsQuery, from: number): string {
  const params = new URLSearchParams({ order: query.order, from: String(from), limit: String(query.limit) });
  if (query.search) params.set("search", query.search);
  return `${roomsPath(serverId)}?${params}`;
}

function BackLink(props: { serverId: string; serverName: string }) {
  return (
    <p>
      <a href={`/servers/${props.serverId}`}>Back to {props.serverName}</a>
    </p>
  );
}

function WhatWeSee() {
  return (
    <p class="hint">
      What we can see of your rooms is their metadata: how many members they have, whether they are encrypted, how much state they hold, when they were made.
      Never a message. A room's name and address are shown only when the room is public (anyone may join it, or it is in the room directory): a private room's
      name is its members' business.
    </p>
  );
}

function RoomRow(props: { serverId: string; room: RoomView }) {
  const { room, serverId } = props;
  return (
    <tr>
      <th scope="row">
        {room.name ? <span class="room-name">{room.name}</span> : null}
        {room.canonicalAlias ? <span class="hint"> {room.canonicalAlias}</span> : null}
        {room.public ? null : <span class="hint">Private room </span>}
        <br />
        <code>{room.roomId}</code>
      </th>
      <td>
        {room.members} ({room.localMembers} here)
      </td>
      <td>{room.encryption ? `Yes (${room.encryption})` : "No"}</td>
      <td>{room.stateEvents}</td>
      <td>{when(room.createdAt)}</td>
      <td>{room.blocked ? "Blocked" : "No"}</td>
      <td>
        <form method="post" action={roomPath(serverId, room.roomId, room.blocked ? "unblock" : "block")}>
          <button type="submit">{room.blocked ? "Unblock" : "Block"}</button>
        </form>
        <a href={roomPath(serverId, room.roomId, "purge")}>Purge…</a>
      </td>
    </tr>
  );
}

export function RoomsPage(props: {
  user: User;
  serverId: string;
  serverName: string;
  query: RoomsQuery;
  rooms?: { rooms: RoomView[]; total: number; nextFrom: number | null } | undefined;
  /** The list's job when the homeserver has not answered yet. */
  pending?: RoomJobView | undefined;
  notice?: string | undefined;
  error?: string | undefined;
}) {
  const { query, serverId } = props;
  const listed = props.rooms;
  return (
    <Layout title={`Rooms of ${props.serverName}`} viewer={props.user}>
      <BackLink serverId={serverId} serverName={props.serverName} />
      <h1>Rooms of {props.serverName}</h1>
      <ServerNav serverId={serverId} current="rooms" />
      <WhatWeSee />
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      <form method="get" action={roomsPath(serverId)} class="card">
        <div class="field">
          <label for="field-search">Search</label>
          <input id="field-search" name="search" type="search" maxlength={255} value={query.search ?? ""} aria-describedby="search-hint" />
          <p class="hint" id="search-hint">
            A room's id, or part of a public room's name or address.
          </p>
        </div>
        <div class="field">
          <label for="field-order">Largest first by</label>
          <select id="field-order" name="order">
            {ROOM_ORDERS.map((order) => (
              <option value={order} selected={order === query.order}>
                {ORDER_LABELS[order]}
              </option>
            ))}
          </select>
        </div>
        <button type="submit">Show rooms</button>
      </form>
      {props.pending ? (
        <p role="status">
          Your homeserver is still answering. <a href={roomJobPath(serverId, props.pending.id)}>Show the rooms</a> in a moment.
        </p>
      ) : null}
      {listed ? (
        listed.rooms.length === 0 ? (
          <p>{query.search ? "No room matches." : "This homeserver has no rooms yet."}</p>
        ) : (
          <div class="scroll">
            <table>
              <caption>
                {`Rooms ${query.from + 1}–${query.from + listed.rooms.length} of ${listed.total}, largest first by ${ORDER_LABELS[query.order]}`}
              </caption>
              <thead>
                <tr>
                  <th scope="col">Room</th>
                  <th scope="col">Members</th>
                  <th scope="col">Encrypted</th>
                  <th scope="col">State events</th>
                  <th scope="col">Created</th>
                  <th scope="col">Blocked</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {listed.rooms.map((room) => (
                  <RoomRow serverId={serverId} room={room} />
                ))}
              </tbody>
            </table>
          </div>
        )
      ) : null}
      {listed && (query.from > 0 || listed.nextFrom !== null) ? (
        <nav aria-label="Pages of rooms">
          {query.from > 0 ? <a href={listLink(serverId, query, Math.max(0, query.from - query.limit))}>Previous rooms</a> : null}{" "}
          {listed.nextFrom !== null ? <a href={listLink(serverId, query, listed.nextFrom)}>Next rooms</a> : null}
        </nav>
      ) : null}
      <p class="hint">
        Blocking a room stops anyone on your homeserver from joining it or being invited to it; its members stay. Purging removes it from your homeserver.
      </p>
    </Layout>
  );
}

export function PurgeRoomPage(props: { user: User; serverId: string; serverName: string; roomId: string; deletes: string[]; error?: string | undefined }) {
  return (
    <Layout title="Purge a room" viewer={props.user}>
      <h1>Purge a room</h1>
      <BackLink serverId={props.serverId} serverName={props.serverName} />
      <Alert kind="error" message={props.error} />
      <form method="post" action={roomPath(props.serverId, props.roomId, "purge")} class="card">
        <p>
          Purging <code>{props.roomId}</code> from {props.serverName} deletes, on your homeserver:
        </p>
        <ul id="purge-deletes">
          {props.deletes.map((what) => (
            <li>{what}</li>
          ))}
        </ul>
        <p class="warning">
          It cannot be undone, and no backup is taken first. If the room is shared with other homeservers, your users could join it again from there: block it
          first to prevent that (a purged room stays blocked).
        </p>
        <div class="field">
          <label for="field-confirm">Type the room's id to confirm</label>
          <input id="field-confirm" name="confirm" required maxlength={300} autocomplete="off" spellcheck={false} aria-describedby="purge-deletes" />
        </div>
        <button type="submit" class="danger">
          Purge this room
        </button>
      </form>
      <p>
        <a href={roomsPath(props.serverId)}>Back to the rooms</a>
      </p>
    </Layout>
  );
}

const JOB_TITLES: Record<string, string> = {
  "homeserver.rooms.list": "Listing the rooms",
  "homeserver.rooms.block": "Changing a room's block",
  "homeserver.rooms.purge": "Purging a room",
};

/** A room job as it stands: its progress in words, or how it ended. */
export function RoomJobPage(props: { user: User; serverId: string; serverName: string; job: RoomJobView; outcome?: string | undefined }) {
  const { job } = props;
  const title = JOB_TITLES[job.kind] ?? "Your homeserver's rooms";
  return (
    <Layout title={title} viewer={props.user}>
      <h1>{title}</h1>
      <BackLink serverId={props.serverId} serverName={props.serverName} />
      {job.status === "pending" ? (
        <>
          <p role="status">
            Still under way on your homeserver
            {job.progress !== null ? `: ${Math.round(job.progress * 100)}% done` : ""}
            {job.progressMessage ? ` (${job.progressMessage})` : ""}.
          </p>
          <p>
            <a href={roomJobPath(props.serverId, job.id)}>See how it goes now</a>
          </p>
        </>
      ) : job.status === "failed" ? (
        <Alert kind="error" message={job.error?.message ?? "It did not finish."} />
      ) : (
        <p role="status">{props.outcome ?? "Done."}</p>
      )}
      <p>
        <a href={roomsPath(props.serverId)}>Back to the rooms</a>
      </p>
    </Layout>
  );
}
