import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { bytes, sha256 } from "../backups/backup-helpers";
import { operatorCookie } from "../fleet/fleet-helpers";
import { advance, call, DAY, expectError, runCron } from "../helpers";
import { decrypt, exportAudit, exportRow, exportUnderWay, exportView, RECORDS, reportExport, uploadExportFile, type ExportUnderWay } from "./legal-helpers";

// Operators' API for legal exports: the list (all, or one server's), one export's state, and its two
// files as stored (age ciphertext), each download audited under the export's notice rule; the files
// are deleted after LEGAL_EXPORT_RETENTION_DAYS by the hourly cron, audited too.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

/** An export whose host file (`file`) was uploaded and whose job succeeded. */
async function readyExport(options: Parameters<typeof exportUnderWay>[0] = {}, file = bytes(3000, 5)) {
  const underWay = await exportUnderWay(options);
  reportExport(underWay, await uploadExportFile(underWay, file));
  await vi.waitFor(async () => expect((await exportRow(underWay.exportId))!.status).toBe("ready"));
  return { ...underWay, file };
}

async function download(underWay: ExportUnderWay, file: string, cookie = underWay.operator) {
  return call(`/api/admin/legal-exports/${underWay.exportId}/files/${file}`, { cookie });
}

async function customerAuditActions(cookie: string): Promise<string[]> {
  const seen = (await (await call("/api/me/export", { cookie })).json()) as { account: { auditLog: Array<{ action: string }> } };
  return seen.account.auditLog.map((entry) => entry.action).filter((action) => action.startsWith("legal_export."));
}

describe("operators' legal export API", () => {
  it("lists exports (all, or one server's) and shows one: status, scope, notice, counts, files", async () => {
    const first = await exportUnderWay();
    const second = await readyExport({ noticeBarred: { reason: "gag order" } });
    const all = (await (await call("/api/admin/legal-exports", { cookie: first.operator })).json()) as { legalExports: Array<{ id: string }> };
    expect(all.legalExports.map((row) => row.id)).toEqual(expect.arrayContaining([first.exportId, second.exportId]));
    const filtered = (await (await call(`/api/admin/legal-exports?serverId=${second.server.id}`, { cookie: first.operator })).json()) as {
      legalExports: Array<{ id: string }>;
    };
    expect(filtered.legalExports.map((row) => row.id)).toEqual([second.exportId]);

    expect(await exportView(first.operator, first.exportId)).toMatchObject({ status: "requested", notice: "given", files: { homeserver: null, worker: null } });
    const view = await exportView(first.operator, second.exportId);
    expect(view).toMatchObject({
      id: second.exportId,
      serverId: second.server.id,
      status: "ready",
      scope: { users: [], rooms: [], content: true },
      notice: "barred",
      noticeBarredReason: "gag order",
      records: { homeserver: RECORDS, worker: { accounts: 1 } },
      files: { homeserver: { size: 3000, sha256: await sha256(second.file) }, worker: { size: expect.any(Number) } },
      filesDeleteAfter: expect.any(String),
    });
    // No storage detail: no key naming R2 or an upload, no object key (a bare /r2/ would match random recipients).
    expect(JSON.stringify(view)).not.toMatch(/"\w*(?:r2|R2|uploadId)\w*":|legal-exports\//);
    await expectError(await call("/api/admin/legal-exports/no-such-export", { cookie: first.operator }), 404);
  });

  it("only operators: 401 anonymous, 403 a customer (even the server's owner)", async () => {
    const ready = await readyExport();
    const owner = ready.server.owner.cookie;
    for (const path of [
      "/api/admin/legal-exports",
      `/api/admin/legal-exports/${ready.exportId}`,
      `/api/admin/legal-exports/${ready.exportId}/files/homeserver`,
    ]) {
      await expectError(await call(path), 401);
      await expectError(await call(path, { cookie: owner }), 403, "operator_only");
    }
    expect((await exportAudit(ready.exportId)).map((entry) => entry.action)).not.toContain("legal_export.downloaded");
  });

  it("downloads both files as stored; each download is audited, and shown to the customer when notice was given", async () => {
    const ready = await readyExport();
    const early = await exportUnderWay();
    await expectError(await download(early, "homeserver"), 409, "not_ready");

    const host = await download(ready, "homeserver");
    expect(host.status).toBe(200);
    expect(host.headers.get("content-disposition")).toContain(`legal-export-${ready.exportId}-homeserver.age`);
    expect(await sha256(new Uint8Array(await host.arrayBuffer()))).toBe(await sha256(ready.file));
    const worker = await download(ready, "worker");
    expect(worker.status).toBe(200);
    expect(await decrypt(ready.identity, new Uint8Array(await worker.arrayBuffer()))).toContain(`"email":"${ready.server.owner.email}"`);
    await expectError(await download(ready, "keys"), 400);

    const downloads = (await exportAudit(ready.exportId)).filter((entry) => entry.action === "legal_export.downloaded");
    expect(downloads.map((entry) => [entry.target, entry.detail.file])).toEqual([
      [ready.server.id, "homeserver"],
      [ready.server.id, "worker"],
    ]);
    expect(await customerAuditActions(ready.server.owner.cookie)).toEqual([
      "legal_export.requested",
      "legal_export.completed",
      "legal_export.downloaded",
      "legal_export.downloaded",
    ]);
  });

  it("with notice barred, downloads are audited where the customer does not look", async () => {
    const ready = await readyExport({ noticeBarred: { reason: "sealed" } });
    expect((await download(ready, "homeserver")).status).toBe(200);
    const entries = await exportAudit(ready.exportId);
    expect(entries.map((entry) => entry.action)).toEqual([
      "legal_export.requested",
      "legal_export.notice_barred",
      "legal_export.completed",
      "legal_export.downloaded",
    ]);
    for (const entry of entries) expect(entry.target).toBe(`legal-export:${ready.exportId}`);
    expect(await customerAuditActions(ready.server.owner.cookie)).toEqual([]);
  });

  it("retention: the hourly cron deletes both files 30 days after the export finished, audited; the record stays", async () => {
    const ready = await readyExport();
    const row = (await exportRow(ready.exportId))!;
    advance(29 * DAY);
    await runCron(new Date());
    expect(await env.BACKUPS.head(row.r2_key)).not.toBeNull();
    advance(2 * DAY);
    await runCron(new Date());
    expect(await env.BACKUPS.head(row.r2_key)).toBeNull();
    expect(await env.BACKUPS.head(row.worker_r2_key)).toBeNull();
    expect((await exportRow(ready.exportId))!.files_deleted_at).toEqual(expect.any(Number));
    const deleted = (await exportAudit(ready.exportId)).filter((entry) => entry.action === "legal_export.files_deleted");
    expect(deleted).toEqual([
      {
        actor: "system",
        action: "legal_export.files_deleted",
        target: ready.server.id,
        detail: { exportId: ready.exportId, serverId: ready.server.id, retentionDays: 30 },
      },
    ]);
    const operator = await operatorCookie();
    await expectError(await download(ready, "worker", operator), 409, "files_deleted");
    expect(await exportView(operator, ready.exportId)).toMatchObject({
      status: "ready",
      reference: expect.any(String),
      files: { homeserver: null, worker: null },
    });
  });
});
