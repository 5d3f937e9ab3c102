import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { bytes, expectUploadRefused, sha256, signedCall, signedJson } from "../backups/backup-helpers";
import { HOST_FAILURE_TEXT } from "../../../worker/http/present";
import { call, expectError } from "../helpers";
import { exportAudit, exportRow, exportUnderWay, RECORDS, reportExport, uploadExportFile } from "./legal-helpers";

// The host's file of a legal export: uploaded by the export's own host, in signed parts, while that
// export's job is under way there; the job's result then makes the export ready (or failed), audited
// with counts only and under the export's notice rule.

beforeEach(async () => {
  // Each test's server goes to the host it brings online.
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

describe("uploading a legal export's host file", () => {
  it("goes to legal-exports/<server>/<id>.age; the job's result makes the export ready and audits the counts", async () => {
    const underWay = await exportUnderWay();
    const { server, exportId } = underWay;
    expect(await exportRow(exportId)).toMatchObject({ status: "requested", r2_key: `legal-exports/${server.id}/${exportId}.age` });
    const file = bytes(5000, 7);
    const result = await uploadExportFile(underWay, file);
    expect(await exportRow(exportId)).toMatchObject({ status: "running", size_bytes: 5000, sha256: await sha256(file) });
    const stored = await env.BACKUPS.get(`legal-exports/${server.id}/${exportId}.age`);
    expect(await sha256(new Uint8Array(await stored!.arrayBuffer()))).toBe(await sha256(file));

    reportExport(underWay, result);
    await vi.waitFor(async () => expect((await exportRow(exportId))!.status).toBe("ready"));
    expect(JSON.parse((await exportRow(exportId))!.records_json)).toEqual(RECORDS);
    const completed = (await exportAudit(exportId)).filter((entry) => entry.action === "legal_export.completed");
    expect(completed).toEqual([
      {
        actor: `host:${server.host.hostId}`,
        action: "legal_export.completed",
        target: server.id,
        detail: { exportId, serverId: server.id, records: { homeserver: RECORDS, worker: expect.any(Object) }, size: expect.any(Number) },
      },
    ]);
    // A ready export takes no more uploads.
    await expectError(await signedCall(server.host, "PUT", `${underWay.base}/parts/1`, file), 404);
  });

  it("another host's agent, or the agent of another export, can neither write, complete nor abort it", async () => {
    const mine = await exportUnderWay();
    const theirs = await exportUnderWay();
    const file = bytes(1000);
    // The other host runs an export job of its own, for another export: it gets the same answer as for no export.
    await expectUploadRefused(theirs.server.host, mine.base);
    expect(await exportRow(mine.exportId)).toMatchObject({ status: "requested", size_bytes: null });
    const received = await env.DB.prepare("SELECT count(*) AS n FROM legal_export_parts WHERE export_id = ?").bind(mine.exportId).first<{ n: number }>();
    expect(received!.n).toBe(0);
    // Unsigned: refused before anything is read.
    await expectError(await signedCall(mine.server.host, "PUT", `${mine.base}/parts/1`, file, { contentSha256: "0".repeat(64) }), 401);
    // Its own host may, while the job is under way.
    expect((await signedCall(mine.server.host, "PUT", `${mine.base}/parts/1`, file)).status).toBe(200);
  });

  it("once its job has ended, even the export's own host can no longer write it", async () => {
    const underWay = await exportUnderWay();
    underWay.server.agent.send({ type: "job.result", id: underWay.job.id, ok: false, error: "psql exited with 2" });
    await vi.waitFor(async () => expect((await exportRow(underWay.exportId))!.status).toBe("failed"));
    await expectError(await signedCall(underWay.server.host, "PUT", `${underWay.base}/parts/1`, bytes(1000)), 404);
  });
});

describe("the job's outcome", () => {
  it("a job that failed fails the export with its error, audited for operators; the customer reads our words", async () => {
    const underWay = await exportUnderWay();
    underWay.server.agent.send({ type: "job.result", id: underWay.job.id, ok: false, error: "psql exited with 2: /var/lib/berth/x" });
    await vi.waitFor(async () => expect((await exportRow(underWay.exportId))!.status).toBe("failed"));
    const row = (await exportRow(underWay.exportId))!;
    expect(row).toMatchObject({ error: "psql exited with 2: /var/lib/berth/x", files_deleted_at: expect.any(Number) });
    expect(await env.BACKUPS.head(row.worker_r2_key)).toBeNull();
    const failed = (await exportAudit(underWay.exportId)).filter((entry) => entry.action === "legal_export.failed");
    expect(failed).toEqual([
      {
        actor: "system",
        action: "legal_export.failed",
        target: underWay.server.id,
        detail: { exportId: underWay.exportId, serverId: underWay.server.id, reason: "psql exited with 2: /var/lib/berth/x" },
      },
    ]);
    const seen = (await (await call("/api/me/export", { cookie: underWay.server.owner.cookie })).json()) as {
      account: { auditLog: Array<{ action: string; detail: Record<string, unknown> }> };
    };
    expect(seen.account.auditLog).toContainEqual(expect.objectContaining({ action: "legal_export.failed", detail: { reason: HOST_FAILURE_TEXT } }));
  });

  it("a job that reports success without the upload it names fails the export", async () => {
    const underWay = await exportUnderWay();
    const file = bytes(1000);
    reportExport(underWay, {
      serverId: underWay.server.id,
      exportId: underWay.exportId,
      records: RECORDS,
      size: file.length,
      sha256: await sha256(file),
      parts: [{ partNumber: 1, size: file.length, sha256: await sha256(file) }],
    });
    await vi.waitFor(async () => expect((await exportRow(underWay.exportId))!.status).toBe("failed"));
    expect((await exportRow(underWay.exportId))!.error).toBe("the export job ended without completing the upload it reported");
  });

  it("the agent aborting fails the export; with notice barred the failure is audited where the customer does not look", async () => {
    const underWay = await exportUnderWay({ noticeBarred: { reason: "sealed by the court" } });
    expect((await signedCall(underWay.server.host, "PUT", `${underWay.base}/parts/1`, bytes(1000))).status).toBe(200);
    const aborted = await signedJson(underWay.server.host, `${underWay.base}/abort`, { reason: "psql failed" });
    expect(aborted.status).toBe(200);
    expect(await exportRow(underWay.exportId)).toMatchObject({ status: "failed", error: "aborted by the host: psql failed" });
    const entries = await exportAudit(underWay.exportId);
    expect(entries.map((entry) => entry.action)).toEqual(["legal_export.requested", "legal_export.notice_barred", "legal_export.failed"]);
    for (const entry of entries) expect(entry.target).toBe(`legal-export:${underWay.exportId}`);
  });
});
