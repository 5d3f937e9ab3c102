import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { BACKUP_PART_SIZE } from "../../../protocol/messages";
import { advance, call, expectError, HOUR, runCron } from "../helpers";
import { enrolledHost, operatorCookie, succeeded } from "../fleet/fleet-helpers";
import { runningServer } from "../servers/server-helpers";
import {
  backupRow,
  backupsOf,
  bytes,
  concat,
  manualBackup,
  pathOf,
  sha256,
  signedCall,
  signedHeaders,
  signedJson,
  uploadBackup,
  waitForBackup,
} from "./backup-helpers";

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const PART = BACKUP_PART_SIZE;

/** A running server with a manual backup whose job its agent has received. */
async function backupUnderWay() {
  const server = await runningServer();
  const job = await manualBackup(server.owner.cookie, server.id, server.agent);
  const base = pathOf(job.payload.uploadBase);
  return { ...server, job, base, backupId: job.payload.backupId };
}

/** Whether R2 still has the backup's multipart upload (it takes a part; an aborted one refuses). */
async function uploadStillOpen(backupId: string): Promise<boolean> {
  const row = (await backupRow(backupId))!;
  try {
    await env.BACKUPS.resumeMultipartUpload(row.r2_key, row.upload_id).uploadPart(1, "x");
    return true;
  } catch {
    return false;
  }
}

describe("the backup job", () => {
  it("names the backup, the server's age recipient, the part size and where to upload", async () => {
    const { job, id, backupId } = await backupUnderWay();
    expect(job.payload).toEqual({
      serverId: id,
      backupId,
      recipient: expect.stringMatching(/^age1[a-z0-9]{58}$/),
      partSize: 8 * 1024 * 1024,
      uploadBase: `https://berth.example/api/agent/backups/${backupId}`,
    });
    expect(await backupRow(backupId)).toMatchObject({ status: "pending", trigger: "manual", r2_key: `backups/${id}/${backupId}.age` });
  });
});

describe("uploading a backup through the Worker", () => {
  it("streams fixed-size parts into an R2 multipart upload; a retried part replaces the first; completing writes the object and its manifest", async () => {
    const { host, owner, id, base, backupId } = await backupUnderWay();
    const chunks = [bytes(PART, 1), bytes(PART, 2), bytes(1234, 3)];

    const first = await signedCall(host, "PUT", `${base}/parts/1`, chunks[0]);
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({ partNumber: 1, size: PART, sha256: await sha256(chunks[0]!) });
    expect((await backupsOf(owner.cookie, id))[0]).toMatchObject({ id: backupId, status: "running", progressBytes: PART, sizeBytes: null });

    // A part sent again (a retry) replaces what came before under its number.
    expect((await signedCall(host, "PUT", `${base}/parts/2`, bytes(PART, 99))).status).toBe(200);
    expect((await signedCall(host, "PUT", `${base}/parts/2`, chunks[1])).status).toBe(200);
    expect((await signedCall(host, "PUT", `${base}/parts/3`, chunks[2])).status).toBe(200);
    expect((await backupsOf(owner.cookie, id))[0]!.progressBytes).toBe(2 * PART + 1234);

    const whole = concat(...chunks);
    const parts = await Promise.all(chunks.map(async (chunk, index) => ({ partNumber: index + 1, size: chunk.length, sha256: await sha256(chunk) })));
    const completed = await signedJson(host, `${base}/complete`, { parts, size: whole.length, sha256: await sha256(whole) });
    expect(completed.status, await completed.clone().text()).toBe(200);
    expect(((await completed.json()) as { backup: unknown }).backup).toMatchObject({ id: backupId, status: "succeeded", sizeBytes: whole.length });

    const object = await env.BACKUPS.get(`backups/${id}/${backupId}.age`);
    expect(object!.size).toBe(whole.length);
    expect(await sha256(new Uint8Array(await object!.arrayBuffer()))).toBe(await sha256(whole));
    const manifest = await (await env.BACKUPS.get(`backups/${id}/${backupId}.manifest.json`))!.json();
    expect(manifest).toMatchObject({ backupId, serverId: id, partSize: PART, size: whole.length, sha256: await sha256(whole), parts });
    expect(await backupRow(backupId)).toMatchObject({
      status: "succeeded",
      size_bytes: whole.length,
      sha256: await sha256(whole),
      parts_json: JSON.stringify(parts),
    });
    const audited = await env.DB.prepare("SELECT action FROM audit_log WHERE target = ? ORDER BY id").bind(id).all<{ action: string }>();
    expect(audited.results.map((row) => row.action)).toEqual(expect.arrayContaining(["backup.requested", "backup.succeeded"]));

    // A completion repeated after a lost answer is harmless; a finished backup takes no more parts.
    expect((await signedJson(host, `${base}/complete`, { parts, size: whole.length, sha256: await sha256(whole) })).status).toBe(200);
    await expectError(await signedCall(host, "PUT", `${base}/parts/1`, chunks[0]), 409, "backup_finished");
  });

  it("refuses parts of the wrong size: only the last may be short, none may exceed the part size", async () => {
    const { host, base, backupId } = await backupUnderWay();
    await expectError(await signedCall(host, "PUT", `${base}/parts/1`, bytes(PART + 1)), 413, "payload_too_large");
    expect((await signedCall(host, "PUT", `${base}/parts/2`, bytes(PART))).status).toBe(200);
    // Part 1 is followed by part 2, so it cannot be the short last one.
    await expectError(await signedCall(host, "PUT", `${base}/parts/1`, bytes(1000)), 400, "invalid_part_size");
    expect((await signedCall(host, "PUT", `${base}/parts/3`, bytes(1000))).status).toBe(200);
    // Nothing may follow a short part.
    await expectError(await signedCall(host, "PUT", `${base}/parts/4`, bytes(1000)), 400, "invalid_part_size");
    // A stream of unknown length goes out chunked, without a Content-Length.
    const chunked = new ReadableStream({
      pull: (controller) => {
        controller.enqueue(bytes(1000));
        controller.close();
      },
    });
    const headers = await signedHeaders(host, "PUT", `${base}/parts/1`, bytes(1000));
    await expectError(await call(`${base}/parts/1`, { method: "PUT", rawBody: chunked, headers }), 411, "length_required");
    await expectError(await signedCall(host, "PUT", `${base}/parts/0`, bytes(1000)), 400, "validation_failed");
    await expectError(await signedCall(host, "PUT", `${base}/parts/10001`, bytes(1000)), 400, "validation_failed");
    const parts = await env.DB.prepare("SELECT part_number, size FROM backup_parts WHERE backup_id = ? ORDER BY part_number").bind(backupId).all();
    expect(parts.results).toEqual([
      { part_number: 2, size: PART },
      { part_number: 3, size: 1000 },
    ]);
  });

  it("a part cut short is not kept, and can be sent again", async () => {
    const { host, base, backupId } = await backupUnderWay();
    const part = bytes(2000);
    const headers = { ...(await signedHeaders(host, "PUT", `${base}/parts/1`, part)), "content-length": "2000" };
    const cutShort = new ReadableStream({
      pull: (controller) => {
        controller.enqueue(part.subarray(0, 1000));
        controller.close();
      },
    });
    await expectError(await call(`${base}/parts/1`, { method: "PUT", rawBody: cutShort, headers }), 503, "part_not_stored");
    expect(await env.DB.prepare("SELECT count(*) AS n FROM backup_parts WHERE backup_id = ?").bind(backupId).first()).toEqual({ n: 0 });
    expect((await signedCall(host, "PUT", `${base}/parts/1`, part)).status).toBe(200);
  });

  it("refuses a completion whose parts are not what the Worker received, and accepts the right one after", async () => {
    const { host, base, backupId } = await backupUnderWay();
    const chunks = [bytes(PART, 4), bytes(500, 5)];
    for (const [index, chunk] of chunks.entries()) expect((await signedCall(host, "PUT", `${base}/parts/${index + 1}`, chunk)).status).toBe(200);
    const whole = concat(...chunks);
    const parts = await Promise.all(chunks.map(async (chunk, index) => ({ partNumber: index + 1, size: chunk.length, sha256: await sha256(chunk) })));
    const complete = (body: unknown) => signedJson(host, `${base}/complete`, body);

    await expectError(await complete({ parts: parts.slice(0, 1), size: PART, sha256: await sha256(chunks[0]!) }), 409, "parts_mismatch");
    await expectError(
      await complete({ parts: [parts[0], { ...parts[1], sha256: "0".repeat(64) }], size: whole.length, sha256: await sha256(whole) }),
      409,
      "parts_mismatch",
    );
    await expectError(await complete({ parts, size: whole.length + 1, sha256: await sha256(whole) }), 409, "parts_mismatch");
    await expectError(await complete({ parts: [parts[1], parts[0]], size: whole.length, sha256: await sha256(whole) }), 409, "parts_mismatch");
    expect(await backupRow(backupId)).toMatchObject({ status: "running" });
    expect(await env.BACKUPS.head(`${(await backupRow(backupId))!.r2_key}`)).toBeNull();

    expect((await complete({ parts, size: whole.length, sha256: await sha256(whole) })).status).toBe(200);
  });

  it("an abort discards the uploaded parts and marks the backup failed, never succeeded", async () => {
    const { host, owner, id, base, backupId } = await backupUnderWay();
    expect((await signedCall(host, "PUT", `${base}/parts/1`, bytes(PART))).status).toBe(200);
    expect(await uploadStillOpen(backupId)).toBe(true);
    const aborted = await signedJson(host, `${base}/abort`, { reason: "no space left on device" });
    expect(aborted.status).toBe(200);
    expect(((await aborted.json()) as { backup: unknown }).backup).toMatchObject({ status: "failed" });
    expect(await backupRow(backupId)).toMatchObject({ status: "failed", error: "aborted by the host: no space left on device" });
    expect(await uploadStillOpen(backupId)).toBe(false);
    expect((await backupsOf(owner.cookie, id))[0]).toMatchObject({ status: "failed", sizeBytes: null });

    await expectError(await signedCall(host, "PUT", `${base}/parts/2`, bytes(10)), 409, "backup_finished");
    await expectError(
      await signedJson(host, `${base}/complete`, { parts: [{ partNumber: 1, size: PART, sha256: "0".repeat(64) }], size: PART, sha256: "0".repeat(64) }),
      409,
      "backup_finished",
    );
    await expectError(await signedJson(host, `${base}/abort`, { reason: "again" }), 409, "backup_finished");
  });

  it("an agent reaches only its own host's backups, and no agent can delete one", async () => {
    const { host, job, base, backupId, id } = await backupUnderWay();
    const other = await enrolledHost(await operatorCookie());
    await expectError(await signedCall(other, "PUT", `${base}/parts/1`, bytes(10)), 404);
    await expectError(
      await signedJson(other, `${base}/complete`, { parts: [{ partNumber: 1, size: 10, sha256: "0".repeat(64) }], size: 10, sha256: "0".repeat(64) }),
      404,
    );
    await expectError(await signedJson(other, `${base}/abort`, { reason: "sabotage" }), 404);
    expect(await backupRow(backupId)).toMatchObject({ status: "pending" });

    expect((await uploadBackup(host, job.payload.uploadBase, [bytes(100)])).status).toBe(200);
    for (const path of [base, `${base}/object`, `${base}/parts/1`]) {
      await expectError(await signedCall(host, "DELETE", path), 404);
    }
    expect(await env.BACKUPS.head(`backups/${id}/${backupId}.age`)).not.toBeNull();
  });
});

describe("a backup job that ends without completing its upload", () => {
  it("fails its backup and aborts the upload when the job fails", async () => {
    const { agent, job, backupId } = await backupUnderWay();
    expect(await uploadStillOpen(backupId)).toBe(true);
    agent.send({ type: "job.result", id: job.id, ok: false, error: "pg_dump exited 1" });
    await waitForBackup(backupId, { status: "failed", error: "pg_dump exited 1" });
    expect(await uploadStillOpen(backupId)).toBe(false);
  });

  it("fails its backup when the job reports success without having completed it", async () => {
    const { agent, job, backupId } = await backupUnderWay();
    agent.send(succeeded(job));
    await waitForBackup(backupId, { status: "failed", error: "the backup job ended without completing the upload" });
  });

  it("fails its backup when the job runs past its deadline", async () => {
    const { backupId } = await backupUnderWay();
    expect(await uploadStillOpen(backupId)).toBe(true);
    advance(7 * HOUR);
    await runCron(new Date(), "* * * * *");
    await waitForBackup(backupId, { status: "failed", error: "deadline exceeded" });
    expect(await uploadStillOpen(backupId)).toBe(false);
  });
});
