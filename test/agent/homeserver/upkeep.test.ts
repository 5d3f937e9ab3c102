// A homeserver's upkeep, run by the agent against a real Synapse and PostgreSQL:
// a room with a long history of state changes (made through the client API, as
// people make them) is compressed by the state compressor in the berth/upkeep
// tool image, cached remote media is expired, the database is vacuumed, and the
// sizes before and after are reported. The room's state, as Synapse serves it,
// is the same afterwards, and the room keeps working.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { homeserverNames } from "../../../agent/homeserver/names.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { TestRun, dockerUsable, ensureImages } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver upkeep tests skipped: ${unusable}`);

/** State events with a new state key each: the room's full state grows, as a busy room's membership does. */
const STATE_KEYS = 300;
/** Topic changes between them: the same key over and over. */
const TOPIC_EVERY = 3;

interface Sizes {
  databaseBytes: number;
  stateGroupsStateRows: number;
  mediaBytes: number;
}
interface UpkeepResult {
  serverId: string;
  before: Sizes;
  after: Sizes;
  remoteMediaDeleted: number;
  compressorMs: number;
}
interface StateEvent {
  type: string;
  state_key: string;
  event_id: string;
  content: unknown;
}

describe.skipIf(unusable)("a homeserver's upkeep (real Synapse, real PostgreSQL)", () => {
  let run: TestRun;
  let spec: ReturnType<TestRun["spec"]>;
  let alice: string;
  let roomId: string;
  let mediaUri: string;

  const client = async (method: string, path: string, body?: unknown) =>
    requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/client/v3${path}`, { method, token: alice, ...(body === undefined ? {} : { body }) });
  const putState = async (type: string, stateKey: string, content: unknown) => {
    const answer = await client("PUT", `/rooms/${encodeURIComponent(roomId)}/state/${type}/${encodeURIComponent(stateKey)}`, content);
    expect(answer.status).toBe(200);
  };
  const roomState = async () => {
    const answer = await client("GET", `/rooms/${encodeURIComponent(roomId)}/state`);
    expect(answer.status).toBe(200);
    const events = answer.body as StateEvent[];
    return events
      .map(({ type, state_key, event_id, content }) => ({ type, state_key, event_id, content }))
      .sort((a, b) => a.event_id.localeCompare(b.event_id));
  };
  const sql = (query: string) => run.sql(spec.serverId, query);

  beforeAll(async () => {
    await ensureImages();
    run = new TestRun();
    spec = run.spec("upkeep");
    await run.run("homeserver.provision", spec);
    alice = (await run.login(spec.serverId, "alice", await run.registerUser(spec.serverId, spec.serverName, "alice"))).token!;
    // a long history made quickly: alice is exempt from the message rate limit (what the admin API's override_ratelimit writes)
    await sql(`INSERT INTO ratelimit_override (user_id, messages_per_second, burst_count) VALUES ('@alice:${spec.serverName}', 0, 0);`);
    const created = await client("POST", "/createRoom", { preset: "private_chat", name: "History" });
    expect(created.status).toBe(200);
    roomId = (created.body as { room_id: string }).room_id;
    for (let i = 0; i < STATE_KEYS; i++) {
      await putState("org.berth.test.note", `note-${i}`, { n: i });
      if (i % TOPIC_EVERY === 0) await putState("m.room.topic", "", { topic: `topic ${i}` });
    }
    // a local upload: upkeep expires other servers' media only, never this
    const upload = await requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/media/v3/upload?filename=notes.txt`, {
      method: "POST",
      token: alice,
      body: { notes: randomBytes(2048).toString("hex") },
    });
    expect(upload.status).toBe(200);
    mediaUri = (upload.body as { content_uri: string }).content_uri;
  }, 900_000);

  afterAll(async () => {
    await run?.cleanup();
  }, 180_000);

  it("compresses state_groups_state, vacuums, reports the sizes before and after, and Synapse serves the same room state", async () => {
    const stateBefore = await roomState();
    expect(stateBefore.filter((event) => event.type === "org.berth.test.note")).toHaveLength(STATE_KEYS);

    const result = (await run.run("homeserver.upkeep", { serverId: spec.serverId, remoteMediaRetentionDays: 30 })) as unknown as UpkeepResult;
    console.info("upkeep measured", JSON.stringify(result));

    expect(result.serverId).toBe(spec.serverId);
    expect(result.before.stateGroupsStateRows).toBeGreaterThan(STATE_KEYS);
    expect(result.after.stateGroupsStateRows).toBeLessThan(result.before.stateGroupsStateRows);
    expect(result.after.stateGroupsStateRows).toBe(Number(await sql("SELECT count(*) FROM state_groups_state;")));
    expect(result.before.databaseBytes).toBeGreaterThan(0);
    expect(result.after.databaseBytes).toBe(Number(await sql("SELECT pg_database_size(current_database());")));
    // no remote media on a server that federates with nobody; the local upload stays
    expect(result.remoteMediaDeleted).toBe(0);
    expect(result.before.mediaBytes).toBeGreaterThan(4096);
    expect(result.after.mediaBytes).toBe(result.before.mediaBytes);
    expect(run.progress.map((p) => p.message)).toEqual(expect.arrayContaining(["compressing the state tables", "VACUUM and ANALYZE"]));

    // Synapse serves the room's state exactly as before, and the room goes on
    expect(await roomState()).toEqual(stateBefore);
    await putState("m.room.topic", "", { topic: "after upkeep" });
    const topic = await client("GET", `/rooms/${encodeURIComponent(roomId)}/state/m.room.topic/`);
    expect(topic.body).toEqual({ topic: "after upkeep" });
    const [server, media] = mediaUri.slice("mxc://".length).split("/");
    const download = await requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/client/v1/media/download/${server}/${media}`, {
      method: "GET",
      token: alice,
    });
    expect(download.status).toBe(200);
    // the tool's one-off container is gone
    expect(await run.runtime.inspectContainer(`${homeserverNames(spec.serverId).postgres}-upkeep`)).toBeUndefined();
  }, 600_000);

  it("a second run finds nothing more to compress and leaves the state as it is", async () => {
    const stateBefore = await roomState();
    const result = (await run.run("homeserver.upkeep", { serverId: spec.serverId, remoteMediaRetentionDays: 1 })) as unknown as UpkeepResult;
    expect(result.after.stateGroupsStateRows).toBeLessThanOrEqual(result.before.stateGroupsStateRows);
    expect(await roomState()).toEqual(stateBefore);
  }, 600_000);
});
