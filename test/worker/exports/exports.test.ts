import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RATE_LIMIT_RULES } from "../../../worker/auth/rate-limit";
import { EXPORT_DOWNLOAD_DAYS } from "../../../worker/exports/exports";
import { HOST_FAILURE_TEXT } from "../../../worker/http/present";
import { bytes, sha256, signedCall } from "../backups/backup-helpers";
import { advance, call, DAY, dumpDatabase, expectError, logIn, mailbox, post, runCron, setNow, verifiedUser } from "../helpers";
import { runningServer } from "../servers/server-helpers";
import {
  askForExport,
  exportOf,
  exportRow,
  exportsOf,
  exportUnderWay,
  readyExport,
  reportExported,
  reportFailed,
  strongPassphrase,
  uploadExport,
  waitForExport,
} from "./export-helpers";

// "Download your homeserver": the owner asks with a passphrase, the server's host makes the export,
// and it is offered to the owner alone for a week. The passphrase is judged, and then never seen
// again: not in an answer, a log line or D1 in the clear.

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});
beforeEach(async () => {
  // Each test's server goes to the host it brings online.
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

async function stranger(): Promise<string> {
  const { email } = await verifiedUser();
  return logIn(email);
}

/** Runs `run` with every console method captured. */
async function capturingLogs<T>(run: () => Promise<T>): Promise<{ result: T; logs: string }> {
  const lines: string[] = [];
  for (const level of ["error", "warn", "log", "info", "debug"] as const) {
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => void lines.push(args.map(String).join(" ")));
  }
  const result = await run();
  return { result, logs: lines.join("\n") };
}

describe("asking for an export", () => {
  it("another customer, or no session, gets what they get for a server that does not exist; nothing is started", async () => {
    const server = await runningServer();
    const other = await stranger();
    const missing = await askForExport(other, `srv-${crypto.randomUUID()}`, strongPassphrase());
    const theirs = await askForExport(other, server.id, strongPassphrase());
    expect(theirs.status).toBe(404);
    expect(await theirs.json()).toEqual(await missing.json());
    await expectError(await call(`/api/servers/${server.id}/exports`, { cookie: other }), 404);
    await expectError(await post(`/api/servers/${server.id}/exports`, { passphrase: strongPassphrase() }), 401);
    expect(await exportsOf(server.owner.cookie, server.id)).toEqual([]);
  });

  it.each(["", "short one", "aaaaaaaaaaaaaaaaaaaa"])(
    "refuses the weak passphrase %j (400 weak_passphrase) without repeating it, and starts nothing",
    async (passphrase) => {
      const server = await runningServer();
      const response = await askForExport(server.owner.cookie, server.id, passphrase);
      const text = await response.clone().text();
      await expectError(response, 400, "weak_passphrase");
      if (passphrase) expect(text).not.toContain(passphrase);
      await expectError(await post(`/api/servers/${server.id}/exports`, {}, { cookie: server.owner.cookie }), 400);
      expect(await exportsOf(server.owner.cookie, server.id)).toEqual([]);
    },
  );

  it("never shows the passphrase: not in an answer, a log line, a mail or D1 in the clear, from the request to the download", async () => {
    const passphrase = strongPassphrase();
    const file = bytes(3000, 5);
    const answers: string[] = [];
    const { logs } = await capturingLogs(async () => {
      const underWay = await exportUnderWay(passphrase);
      const { server, exportId } = underWay;
      answers.push(JSON.stringify(underWay.view));
      // A second request while one is under way is refused: its answer does not carry the passphrase either.
      answers.push(await (await askForExport(server.owner.cookie, server.id, passphrase)).text());
      expect(underWay.job.payload.passphrase).toBe(passphrase);
      await uploadExport(underWay, [file]);
      answers.push(JSON.stringify(await exportsOf(server.owner.cookie, server.id)));
      await reportExported(underWay, file);
      await waitForExport(exportId, { status: "ready" });
      answers.push(JSON.stringify(await exportsOf(server.owner.cookie, server.id)));
      answers.push(JSON.stringify(await mailbox(server.owner.email)));
      answers.push(await (await call("/api/me/export", { cookie: server.owner.cookie })).text());
      const download = await call(`/api/servers/${server.id}/exports/${exportId}/download`, { cookie: server.owner.cookie });
      expect(download.status).toBe(200);
      answers.push(JSON.stringify([...download.headers]));
    });
    expect(answers.length).toBe(7);
    for (const answer of answers) expect(answer).not.toContain(passphrase);
    expect(logs).not.toContain(passphrase);
    expect(await dumpDatabase()).not.toContain(passphrase);
  });

  it("is sent to the server's host as a homeserver.full_export job naming the export; the export is listed as queued", async () => {
    const { server, exportId, job, view } = await exportUnderWay();
    expect(job.payload).toEqual({
      serverId: server.id,
      exportId,
      passphrase: expect.any(String),
      partSize: 8 * 1024 * 1024,
      uploadBase: `https://berth.example/api/agent/exports/${exportId}`,
    });
    expect(exportId).toMatch(/^[0-9a-f-]{36}$/);
    expect(view).toMatchObject({ status: "queued", progress: { bytesUploaded: 0, fraction: 0 }, sizeBytes: null, downloadUrl: null, expiresAt: null });
    expect(await exportRow(exportId)).toMatchObject({
      server_id: server.id,
      host_id: server.host.hostId,
      r2_key: `server-exports/${server.id}/${exportId}.age`,
    });
  });

  it("one at a time per server (409 export_running), and a few an hour (429 with Retry-After)", async () => {
    // One rate-limit window throughout: a window that turned mid-test would let the refused request through.
    setNow(Date.now());
    const server = await runningServer();
    const first = await exportOf(server);
    await expectError(await askForExport(server.owner.cookie, server.id, strongPassphrase()), 409, "export_running");
    reportFailed(first, "pg_dump exited with 1");
    await waitForExport(first.exportId, { status: "failed" });
    for (let i = 1; i < RATE_LIMIT_RULES.export_server.limit; i++) {
      const next = await exportOf(server);
      reportFailed(next, "pg_dump exited with 1");
      await waitForExport(next.exportId, { status: "failed" });
    }
    const limited = await askForExport(server.owner.cookie, server.id, strongPassphrase());
    expect(limited.headers.get("retry-after")).toMatch(/^\d+$/);
    await expectError(limited, 429, "rate_limited");
    expect(await exportsOf(server.owner.cookie, server.id)).toHaveLength(RATE_LIMIT_RULES.export_server.limit);
  });
});

describe("an export's progress and outcome", () => {
  it("shows the bytes uploaded and the host's estimate; once ready, its size and a download link for a week; the owner is mailed", async () => {
    const underWay = await exportUnderWay();
    const { server, exportId, job } = underWay;
    server.agent.send({ type: "job.ack", id: job.id });
    server.agent.send({ type: "job.progress", id: job.id, progress: 0.4, message: "dumping the database" });
    await vi.waitFor(async () => expect((await exportsOf(server.owner.cookie, server.id))[0]!.progress.fraction).toBe(0.4));
    const file = bytes(4000, 2);
    await uploadExport(underWay, [file]);
    expect((await exportsOf(server.owner.cookie, server.id))[0]).toMatchObject({ status: "running", progress: { bytesUploaded: 4000 }, downloadUrl: null });

    await reportExported(underWay, file);
    await waitForExport(exportId, { status: "ready", size_bytes: 4000 });
    const [ready] = await exportsOf(server.owner.cookie, server.id);
    expect(ready).toMatchObject({ status: "ready", sizeBytes: 4000, progress: { bytesUploaded: 4000, fraction: 1 }, error: null });
    expect(Date.parse(ready!.expiresAt!) - Date.parse(ready!.readyAt!)).toBe(EXPORT_DOWNLOAD_DAYS * DAY);
    expect(ready!.downloadUrl).toBe(`/api/servers/${server.id}/exports/${exportId}/download`);

    const [mail] = await mailbox(server.owner.email);
    expect(mail!.subject).toMatch(/export of .* is ready/);
    expect(mail!.links).toEqual([`https://berth.example/servers/${server.id}/export`]);
  });

  it("a failed job leaves nothing in R2 (the parts are dropped), says why in our words, and mails the owner", async () => {
    const underWay = await exportUnderWay();
    const { server, exportId, base } = underWay;
    expect((await signedCall(server.host, "PUT", `${base}/parts/1`, bytes(8 * 1024 * 1024, 1))).status).toBe(200);
    reportFailed(underWay, "pg_dump: error: connection to /var/run/postgresql failed");
    await waitForExport(exportId, { status: "failed" });
    const row = (await exportRow(exportId))!;
    await expect(env.BACKUPS.resumeMultipartUpload(row.r2_key, row.upload_id).uploadPart(2, "x")).rejects.toThrow();
    expect(await env.BACKUPS.get(row.r2_key)).toBeNull();
    const [failed] = await exportsOf(server.owner.cookie, server.id);
    expect(failed).toMatchObject({ status: "failed", error: HOST_FAILURE_TEXT, downloadUrl: null, progress: { fraction: null } });
    const [mail] = await mailbox(server.owner.email);
    expect(mail!.subject).toMatch(/export of .* failed/);
    expect(mail!.text).not.toContain("/var/run");
  });

  it("a job that reports a file other than the one uploaded fails, and the uploaded object is deleted", async () => {
    const underWay = await exportUnderWay();
    const file = bytes(2000, 4);
    await uploadExport(underWay, [file]);
    await reportExported(underWay, bytes(2000, 9));
    await waitForExport(underWay.exportId, { status: "failed" });
    expect(await env.BACKUPS.get((await exportRow(underWay.exportId))!.r2_key)).toBeNull();
    expect((await exportsOf(underWay.server.owner.cookie, underWay.server.id))[0]!.error).toBe("the host ended the export without completing its upload");
  });
});

describe("downloading an export", () => {
  it("another customer gets the same 404 as for no export; the owner gets 409 before it is ready", async () => {
    const underWay = await exportUnderWay();
    const { server, exportId } = underWay;
    const other = await stranger();
    const url = `/api/servers/${server.id}/exports/${exportId}/download`;
    await expectError(await call(url, { cookie: server.owner.cookie }), 409, "export_not_ready");
    const file = bytes(1500, 3);
    await uploadExport(underWay, [file]);
    await reportExported(underWay, file);
    await waitForExport(exportId, { status: "ready" });
    const theirs = await call(url, { cookie: other });
    const none = await call(`/api/servers/${server.id}/exports/${crypto.randomUUID()}/download`, { cookie: other });
    expect(theirs.status).toBe(404);
    expect(await theirs.json()).toEqual(await none.json());
    await expectError(await call(url), 401);
    // Another of the owner's servers does not open it either.
    await expectError(await call(`/api/servers/${crypto.randomUUID()}/exports/${exportId}/download`, { cookie: server.owner.cookie }), 404);
  });

  it("streams the file to its owner as an attachment named after the homeserver and the day", async () => {
    const file = bytes(5000, 6);
    const { server, exportId } = await readyExport(file);
    const response = await call(`/api/servers/${server.id}/exports/${exportId}/download`, { cookie: server.owner.cookie });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/octet-stream");
    expect(response.headers.get("content-length")).toBe("5000");
    expect(response.headers.get("content-disposition")).toMatch(/^attachment; filename="berth-export-hs-[0-9a-f]{8}-\d{4}-\d{2}-\d{2}\.age"$/);
    expect(await sha256(new Uint8Array(await response.arrayBuffer()))).toBe(await sha256(file));
  });

  it(`after ${EXPORT_DOWNLOAD_DAYS} days it is gone (410), and the cron deletes its file and marks it expired`, async () => {
    const { server, exportId } = await readyExport(bytes(1000, 8));
    const url = `/api/servers/${server.id}/exports/${exportId}/download`;
    advance(EXPORT_DOWNLOAD_DAYS * DAY - 60_000);
    await runCron();
    expect((await call(url, { cookie: await logIn(server.owner.email) })).status).toBe(200);
    advance(2 * 60_000);
    const cookie = await logIn(server.owner.email);
    const answer = await expectError(await call(url, { cookie }), 410, "export_expired");
    expect(answer).toBe("export_expired");
    await runCron();
    await waitForExport(exportId, { status: "expired" });
    expect(await env.BACKUPS.get((await exportRow(exportId))!.r2_key)).toBeNull();
    expect((await exportsOf(cookie, server.id))[0]).toMatchObject({ status: "expired", downloadUrl: null });
    await expectError(await call(url, { cookie }), 410, "export_expired");
  });
});
