import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { BACKUP_PART_SIZE } from "../../../protocol/messages";
import { bytes, concat, expectUploadRefused, sha256, signedCall, signedJson } from "../backups/backup-helpers";
import { expectError } from "../helpers";
import { exportRow, exportsOf, exportUnderWay, readyExport, reportExported, uploadExport, waitForExport } from "./export-helpers";

// An export's file is uploaded by the host running its job, in signed parts, while that job is under
// way there. Another host (or a Synapse on the host, which holds no host key) cannot write, complete
// or abort it, and nobody can overwrite a finished one.

beforeEach(async () => {
  // Each test's server goes to the host it brings online.
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const PART = BACKUP_PART_SIZE;

async function partsReceived(exportId: string): Promise<number> {
  const row = await env.DB.prepare("SELECT count(*) AS n FROM server_export_parts WHERE export_id = ?").bind(exportId).first<{ n: number }>();
  return row!.n;
}

describe("uploading an export's file", () => {
  it("another host's agent, even one running an export of its own, can neither write, complete nor abort it; unsigned requests are refused", async () => {
    const mine = await exportUnderWay();
    const theirs = await exportUnderWay();
    await expectUploadRefused(theirs.server.host, mine.base);
    expect(await exportRow(mine.exportId)).toMatchObject({ status: "queued", size_bytes: null });
    expect(await partsReceived(mine.exportId)).toBe(0);
    const file = bytes(1000);
    // A body that is not the one signed (anyone without the host's key) proves nothing.
    await expectError(await signedCall(mine.server.host, "PUT", `${mine.base}/parts/1`, file, { contentSha256: "0".repeat(64) }), 401);
    // Its own host may, while the job is under way.
    expect((await signedCall(mine.server.host, "PUT", `${mine.base}/parts/1`, file)).status).toBe(200);
  });

  it("the host cannot write another export of its own server with this export's job, nor one whose job has ended", async () => {
    const first = await exportUnderWay();
    await uploadExport(first, [bytes(800, 1)]);
    await reportExported(first, bytes(800, 1));
    await waitForExport(first.exportId, { status: "ready" });
    const object = await env.BACKUPS.get((await exportRow(first.exportId))!.r2_key);
    const before = await sha256(new Uint8Array(await object!.arrayBuffer()));

    // The same host, its export job over: the finished export takes nothing, and keeps its file.
    await expectUploadRefused(first.server.host, first.base);
    const after = await env.BACKUPS.get((await exportRow(first.exportId))!.r2_key);
    expect(await sha256(new Uint8Array(await after!.arrayBuffer()))).toBe(before);
    expect(await exportRow(first.exportId)).toMatchObject({ status: "ready", size_bytes: 800 });
  });

  it("takes no parts once its upload is complete (409), and a repeated completion changes nothing", async () => {
    const underWay = await exportUnderWay();
    const chunks = [bytes(PART, 1), bytes(300, 2)];
    await uploadExport(underWay, chunks);
    await expectError(await signedCall(underWay.server.host, "PUT", `${underWay.base}/parts/2`, bytes(300, 3)), 409, "export_uploaded");
    const whole = concat(...chunks);
    const parts = await Promise.all(chunks.map(async (chunk, index) => ({ partNumber: index + 1, size: chunk.length, sha256: await sha256(chunk) })));
    const again = await signedJson(underWay.server.host, `${underWay.base}/complete`, { parts, size: whole.length, sha256: await sha256(whole) });
    expect(again.status).toBe(200);
    expect(await exportRow(underWay.exportId)).toMatchObject({ status: "running", size_bytes: whole.length, progress_bytes: whole.length });
  });

  it("an abort from its host drops the parts and fails the export; nothing is left in R2", async () => {
    const underWay = await exportUnderWay();
    const { server, base, exportId } = underWay;
    expect((await signedCall(server.host, "PUT", `${base}/parts/1`, bytes(PART, 1))).status).toBe(200);
    const aborted = await signedJson(server.host, `${base}/abort`, { reason: "disk full on /var/lib/berth" });
    expect(aborted.status).toBe(200);
    const row = (await exportRow(exportId))!;
    expect(row).toMatchObject({ status: "failed" });
    await expect(env.BACKUPS.resumeMultipartUpload(row.r2_key, row.upload_id).uploadPart(2, "x")).rejects.toThrow();
    expect(await env.BACKUPS.get(row.r2_key)).toBeNull();
    // The host's words stay with operators.
    expect(JSON.stringify(await exportsOf(server.owner.cookie, server.id))).not.toContain("/var/lib");
  });

  it("a ready export's parts are exactly the file the host uploaded", async () => {
    const file = bytes(2500, 4);
    const { exportId } = await readyExport(file);
    const object = await env.BACKUPS.get((await exportRow(exportId))!.r2_key);
    expect(await sha256(new Uint8Array(await object!.arrayBuffer()))).toBe(await sha256(file));
  });
});
