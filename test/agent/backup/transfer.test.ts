// The agent's side of its signed HTTP requests (agent/backup/transfer.ts),
// against a stand-in Worker that checks each token with the Worker's own
// verifyAgentRequest and refuses a token used twice, as the Worker does.
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { downloadBackup, uploadBackup, type AgentIdentity } from "../../../agent/backup/transfer.ts";
import { generateHostKey } from "../../../agent/credentials.ts";
import { AGENT_REQUEST_TOKEN } from "../../../protocol/agent-requests.ts";
import { BackupTarget } from "../homeserver/backup-target.ts";
import { pseudoRandomBytes, sha256 } from "./helpers.ts";

const PART = 64 * 1024;

describe("agent requests: a token of its own for every request", () => {
  const identity: AgentIdentity = { hostId: `host-${crypto.randomUUID()}`, privateKey: generateHostKey() };
  const target = new BackupTarget(identity.hostId, identity.privateKey);
  const signal = new AbortController().signal;
  const upload = (backupId: string, data: Buffer, as = identity) =>
    uploadBackup(Readable.from([data]), { identity: as, uploadBase: target.uploadBase(backupId), partSize: PART, signal, retryBaseMs: 1 });

  beforeAll(() => target.start());
  afterAll(() => target.stop());

  it("uploads, retries and downloads with tokens the Worker's checks accept, each for its own method, path and body", async () => {
    const data = pseudoRandomBytes(2 * PART + 100, "transfer");
    target.failures.push({ match: /PUT .*\/parts\/2$/, status: 503 });
    const result = await upload("b1", data);
    const downloaded = Buffer.concat(await (await downloadBackup(identity, target.objectUrl("b1"), signal)).toArray());

    expect(target.refused).toEqual([]);
    expect(result).toMatchObject({ size: data.length, sha256: sha256(data) });
    expect(downloaded.equals(data)).toBe(true);
    const base = new URL(target.uploadBase("b1")).pathname;
    // The retried part was sent with a fresh token: the first one was spent.
    expect(target.admitted.map(({ method, path }) => `${method} ${path}`)).toEqual([
      `PUT ${base}/parts/1`,
      `PUT ${base}/parts/2`,
      `PUT ${base}/parts/2`,
      `PUT ${base}/parts/3`,
      `POST ${base}/complete`,
      `GET ${base}/object`,
    ]);
    expect(new Set(target.admitted.map((claims) => claims.jti)).size).toBe(target.admitted.length);
    for (const claims of target.admitted) {
      expect(claims.iss).toBe(identity.hostId);
      expect(claims.exp - claims.iat).toBe(AGENT_REQUEST_TOKEN.lifetimeSeconds);
    }
    expect(target.admitted[0]!.body_sha256).toBe(sha256(data.subarray(0, PART)));
    expect(target.admitted.at(-1)!.body_sha256).toBe(sha256(Buffer.alloc(0)));
  });

  it("sends every part's own bytes when parts are retried while the next ones fill (the uploader reuses its part buffers)", async () => {
    const data = pseudoRandomBytes(5 * PART + 1, "reused buffers");
    target.failures.push({ match: /PUT .*\/parts\/3$/, status: 503 }, { match: /PUT .*\/parts\/3$/, status: 500 }, { match: /PUT .*\/parts\/6$/, status: 429 });
    const result = await upload("b3", data);

    expect(target.refused).toEqual([]);
    expect(result.parts.map((part) => part.sha256)).toEqual([0, 1, 2, 3, 4, 5].map((i) => sha256(data.subarray(i * PART, (i + 1) * PART))));
    expect(result).toMatchObject({ size: data.length, sha256: sha256(data) });
    const stored = target.backups.get("b3")!;
    expect(Buffer.concat([...stored.parts.keys()].sort((a, b) => a - b).map((n) => stored.parts.get(n)!)).equals(data)).toBe(true);
  });

  it("a key that is not the host's is refused, and the upload fails without retrying", async () => {
    const impostor = { hostId: identity.hostId, privateKey: generateHostKey() };
    await expect(upload("b2", pseudoRandomBytes(100, "impostor"), impostor)).rejects.toThrow(/part 1 failed after 1 attempt: PUT part 1 answered 401/);
    expect(target.refused).toEqual([
      `PUT ${new URL(target.uploadBase("b2")).pathname}/parts/1: bad signature`,
      expect.stringMatching(/\/abort: bad signature$/),
    ]);
  });
});
