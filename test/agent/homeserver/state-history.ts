// A room with a long history of state changes, made through the client API as
// people make them: state events with a new state key each (the room's full
// state grows, as a busy room's membership does) and topic changes between them
// (the same key over and over). What upkeep's state compressor works on: the
// upkeep test checks it on this history, and `npm run bench` measures it.
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import type { TestRun } from "./helpers.ts";

export interface StateHistoryShape {
  /** State events with a distinct state key each. */
  stateKeys: number;
  /** A topic change after every this many of them. */
  topicEvery: number;
}

export interface StateHistory {
  roomId: string;
  /** The access token of the room's creator, alice. */
  token: string;
  /** A client-API call as alice: its status and body. */
  client: (method: string, path: string, body?: unknown) => ReturnType<typeof requestJson>;
  putState: (type: string, stateKey: string, content: unknown) => Promise<void>;
}

/** Registers alice on a provisioned homeserver and writes the history into a new private room of hers. */
export async function makeStateHistory(run: TestRun, serverId: string, serverName: string, shape: StateHistoryShape): Promise<StateHistory> {
  const token = (await run.login(serverId, "alice", await run.registerUser(serverId, serverName, "alice"))).token!;
  // a long history made quickly: alice is exempt from the message rate limit (what the admin API's override_ratelimit writes)
  await run.sql(serverId, `INSERT INTO ratelimit_override (user_id, messages_per_second, burst_count) VALUES ('@alice:${serverName}', 0, 0);`);
  const base = await run.synapseBase(serverId);
  const client = (method: string, path: string, body?: unknown) =>
    requestJson(`${base}/_matrix/client/v3${path}`, { method, token, ...(body === undefined ? {} : { body }) });
  const created = await client("POST", "/createRoom", { preset: "private_chat", name: "History" });
  if (created.status !== 200) throw new Error(`creating the room failed: ${created.status} ${JSON.stringify(created.body)}`);
  const roomId = (created.body as { room_id: string }).room_id;
  const putState = async (type: string, stateKey: string, content: unknown) => {
    const answer = await client("PUT", `/rooms/${encodeURIComponent(roomId)}/state/${type}/${encodeURIComponent(stateKey)}`, content);
    if (answer.status !== 200) throw new Error(`sending ${type} failed: ${answer.status} ${JSON.stringify(answer.body)}`);
  };
  for (let i = 0; i < shape.stateKeys; i++) {
    await putState("org.berth.test.note", `note-${i}`, { n: i });
    if (i % shape.topicEvery === 0) await putState("m.room.topic", "", { topic: `topic ${i}` });
  }
  return { roomId, token, client, putState };
}
