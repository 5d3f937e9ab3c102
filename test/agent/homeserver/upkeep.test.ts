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
import { makeStateHistory, type StateHistory } from "./state-history.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver upkeep tests skipped: ${unusable}`);

/** 300 state keys and a topic change after every third: 400 state events. */
const HISTORY = { stateKeys: 300, topicEvery: 3 };

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
  let history: StateHistory;
  let mediaUri: string;

  const roomState = async () => {
    const answer = await history.client("GET", `/rooms/${encodeURIComponent(history.roomId)}/state`);
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
    history = await makeStateHistory(run, spec.serverId, spec.serverName, HISTORY);
    // a local upload: upkeep expires other servers' media only, never this
    const upload = await requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/media/v3/upload?filename=notes.txt`, {
      method: "POST",
      token: history.token,
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
    expect(stateBefore.filter((event) => event.type === "org.berth.test.note")).toHaveLength(HISTORY.stateKeys);

    const result = (await run.run("homeserver.upkeep", { serverId: spec.serverId, remoteMediaRetentionDays: 30 })) as unknown as UpkeepResult;
    console.info("upkeep measured", JSON.stringify(result));

    expect(result.serverId).toBe(spec.serverId);
    expect(result.before.stateGroupsStateRows).toBeGreaterThan(HISTORY.stateKeys);
    expect(result.after.stateGroupsStateRows).toBeLessThan(result.before.stateGroupsStateRows);
    expect(result.after.stateGroupsStateRows).toBe(Number(await sql("SELECT count(*) FROM state_groups_state;")));
    expect(result.before.databaseBytes).toBeGreaterThan(0);
    // Synapse keeps writing while it runs (background updates, client IPs), so the database may have moved
    // by a few pages since upkeep measured it; the figure must still be the database's own, not an estimate
    const databaseBytesNow = Number(await sql("SELECT pg_database_size(current_database());"));
    expect(Math.abs(result.after.databaseBytes - databaseBytesNow)).toBeLessThanOrEqual(64 * 8192);
    // no remote media on a server that federates with nobody; the local upload stays
    expect(result.remoteMediaDeleted).toBe(0);
    expect(result.before.mediaBytes).toBeGreaterThan(4096);
    expect(result.after.mediaBytes).toBe(result.before.mediaBytes);
    expect(run.progress.map((p) => p.message)).toEqual(expect.arrayContaining(["compressing the state tables", "VACUUM and ANALYZE"]));

    // Synapse serves the room's state exactly as before, and the room goes on
    expect(await roomState()).toEqual(stateBefore);
    await history.putState("m.room.topic", "", { topic: "after upkeep" });
    const topic = await history.client("GET", `/rooms/${encodeURIComponent(history.roomId)}/state/m.room.topic/`);
    expect(topic.body).toEqual({ topic: "after upkeep" });
    const [server, media] = mediaUri.slice("mxc://".length).split("/");
    const download = await requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/client/v1/media/download/${server}/${media}`, {
      method: "GET",
      token: history.token,
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
