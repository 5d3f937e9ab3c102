import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { IMPORT_FAILED, IMPORTING_REASON } from "../../../worker/imports/import-job";
import { IMPORT_PART_SIZE } from "../../../worker/imports/imports";
import { subscriber } from "../billing/stripe-helpers";
import { bytes, pathOf, sha256, signedCall } from "../backups/backup-helpers";
import { succeeded } from "../fleet/fleet-helpers";
import { call, dumpDatabase, expectError, mailbox, post } from "../helpers";
import { jobOf, onlineHost, runningServer, serverView } from "../servers/server-helpers";
import { answerCheck, importing, importOf, importRow, sendPart, startImport, uploadArchive, waitingServer, type ImportView } from "./import-helpers";

// "Import a homeserver": an archive uploaded in parts into a waiting homeserver on its owner's
// domain is made into that homeserver by its host once the domain delegates to us; until then,
// and when it fails, nothing is made, and its owner reads why.

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const count = async (sql: string, ...values: unknown[]) =>
  (await env.DB.prepare(sql)
    .bind(...values)
    .first<number>("n"))!;
const workloadsOf = (serverId: string) => count("SELECT count(*) AS n FROM workloads WHERE id = ?", serverId);
const jobsOf = (serverId: string, kind: string) => count("SELECT count(*) AS n FROM jobs WHERE server_id = ? AND kind = ?", serverId, kind);
/** The owner is mailed after the outcome is recorded: the mail with `subject`, once it is there. */
const mailTo = (email: string, subject: string) =>
  vi.waitFor(async () => {
    const mail = (await mailbox(email)).find((candidate) => candidate.subject === subject);
    expect(mail).toBeDefined();
    return mail;
  });
const viewOf = async (cookie: string, serverId: string) => (await (await importOf(cookie, serverId)).json()) as ImportView;

describe("importing a homeserver from an archive", () => {
  it("takes the archive in exact parts, resumably, each checked against the digest it was sent with", async () => {
    const { owner, view: server } = await waitingServer();
    const archive = bytes(IMPORT_PART_SIZE + 1000, 5);
    const started = await startImport(owner.cookie, server.id, archive.length);
    expect(started.status).toBe(201);
    expect(await started.json()).toMatchObject({ status: "uploading", parts: 2, partSize: IMPORT_PART_SIZE, missingParts: [1, 2] });
    const first = archive.subarray(0, IMPORT_PART_SIZE);
    const last = archive.subarray(IMPORT_PART_SIZE);

    await expectError(await sendPart(owner.cookie, server.id, 2, last.subarray(1)), 400, "invalid_part_size");
    await expectError(await sendPart(owner.cookie, server.id, 3, last), 400, "invalid_part_number");
    expect((await sendPart(owner.cookie, server.id, 2, last)).status).toBe(200);
    expect(await viewOf(owner.cookie, server.id)).toMatchObject({ missingParts: [1], progress: { partsReceived: 1 } });

    // A part that arrives other than it was sent is forgotten, to be sent again.
    const corrupted = await sendPart(owner.cookie, server.id, 1, first, { "x-part-sha256": await sha256(last) });
    await expectError(corrupted, 400, "part_corrupted");
    expect((await viewOf(owner.cookie, server.id)).missingParts).toEqual([1]);
    await expectError(await post(`/api/servers/${server.id}/import/complete`, {}, { cookie: owner.cookie }), 409, "parts_missing");

    expect((await sendPart(owner.cookie, server.id, 1, first, { "x-part-sha256": await sha256(first) })).status).toBe(200);
    const completed = await post(`/api/servers/${server.id}/import/complete`, {}, { cookie: owner.cookie });
    expect(completed.status).toBe(200);
    const view = (await completed.json()) as ImportView;
    expect(view).toMatchObject({ status: "uploaded", missingParts: [], progress: { partsReceived: 2, fraction: null } });
    const stored = await env.BACKUPS.get((await importRow(view.id))!.r2_key);
    expect(stored?.size).toBe(archive.length);
    expect(await sha256(new Uint8Array(await stored!.arrayBuffer()))).toBe(await sha256(archive));
    await expectError(await sendPart(owner.cookie, server.id, 1, first), 409, "import_uploaded");
  });

  it("makes the homeserver from it once the domain delegates, with the passphrase only on the host's connection", async () => {
    const passphrase = `heron ledger ${crypto.randomUUID()}`;
    const { agent, host, owner, view: server, serverName, archive, imported: view, job } = await importing(passphrase);
    expect(job.payload).toEqual({
      importId: view.id,
      spec: expect.objectContaining({ serverId: server.id, serverName, publicBaseUrl: `https://${server.name}.berth.example/` }),
      downloadUrl: `https://berth.example/api/agent/imports/${view.id}/archive`,
      passphrase,
    });
    expect(await serverView(owner.cookie, server.id)).toMatchObject({ status: "provisioning", statusReason: IMPORTING_REASON });
    expect((await viewOf(owner.cookie, server.id)).status).toBe("importing");
    // Nothing for reconciliation to provision empty while the host makes it.
    expect(await workloadsOf(server.id)).toBe(0);
    expect(await jobsOf(server.id, "homeserver.provision")).toBe(0);
    expect(await dumpDatabase()).not.toContain(passphrase);

    const download = await signedCall(host, "GET", pathOf(String(job.payload.downloadUrl)));
    expect(download.status).toBe(200);
    expect(await sha256(new Uint8Array(await download.arrayBuffer()))).toBe(await sha256(archive));
    const other = await onlineHost();
    await expectError(await signedCall(other.host, "GET", pathOf(String(job.payload.downloadUrl))), 403, "not_importing");

    agent.send(succeeded(job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, server.id)).status).toBe("running"));
    expect((await serverView(owner.cookie, server.id)).statusReason).toBeNull();
    const made = await env.DB.prepare("SELECT admin_user_id, applied_plan_id FROM servers WHERE id = ?").bind(server.id).first();
    expect(made).toEqual({ admin_user_id: `@admin:${serverName}`, applied_plan_id: "starter" });
    expect(await viewOf(owner.cookie, server.id)).toMatchObject({
      status: "imported",
      counts: { users: 3, rooms: 2, events: 40, mediaFiles: 1 },
      progress: { fraction: 1 },
    });
    expect(await workloadsOf(server.id)).toBe(1);
    expect(await env.BACKUPS.head((await importRow(view.id))!.r2_key)).toBeNull();
    const mail = await mailTo(owner.email, `${serverName} is imported`);
    expect(mail!.text).toContain("3 users, 2 rooms, 40 events and 1 media files");
    expect(mail!.text).not.toContain(passphrase);
    expect(mail!.links).toEqual([`https://berth.example/servers/${server.id}`]);
    const stored = await env.DB.prepare("SELECT payload FROM jobs WHERE id = ?").bind(job.id).first<string>("payload");
    expect(JSON.parse(stored!).wrappedPassphrase).toBeNull();
    await expectError(await signedCall(host, "GET", pathOf(String(job.payload.downloadUrl))), 404, "not_found");
  });

  it("waits for the whole archive: a delegation that holds while it uploads makes nothing, and completing asks again", async () => {
    const { agent, owner, view: server, check } = await waitingServer();
    const archive = bytes(1000, 9);
    expect((await startImport(owner.cookie, server.id, archive.length)).status).toBe(201);
    answerCheck(agent, check, "holds");
    await vi.waitFor(async () => expect(await count("SELECT count(*) AS n FROM jobs WHERE id = ? AND status = 'succeeded'", check.id)).toBe(1));
    expect((await serverView(owner.cookie, server.id)).status).toBe("awaiting_delegation");
    expect(await jobsOf(server.id, "homeserver.provision")).toBe(0);
    await expectError(
      await post(`/api/servers/${server.id}/delegation/publish-later`, { confirm: true }, { cookie: owner.cookie }),
      409,
      "import_needs_delegation",
    );

    expect((await sendPart(owner.cookie, server.id, 1, archive)).status).toBe(200);
    expect((await post(`/api/servers/${server.id}/import/complete`, {}, { cookie: owner.cookie })).status).toBe(200);
    answerCheck(agent, (await jobOf(agent, "homeserver.delegation_check")).job, "holds");
    const { job } = await jobOf(agent, "homeserver.import");
    expect(job.payload).not.toHaveProperty("passphrase");
    expect(await jobsOf(server.id, "homeserver.provision")).toBe(0);
  });

  it.each([
    ["a refusal the agent writes is shown as it is", "the archive is of other.example, not SERVER", "the archive is of other.example, not SERVER"],
    [
      "a refusal's detail from the archive is shown too",
      "the export is truncated or corrupted (payload chunk 3 does not authenticate)",
      "the export is truncated or corrupted (payload chunk 3 does not authenticate)",
    ],
    ["a detail with a link in it is not", "the archive cannot be imported: see https://phish.example/fix", IMPORT_FAILED],
    ["anything else the host says stays in its job", "pg_restore: error: /var/lib/berth/imports/x: could not open", IMPORT_FAILED],
  ])("leaves the server waiting when the host fails it: %s", async (_, error, shown) => {
    const { agent, owner, view: server, serverName, imported: view, job } = await importing();
    agent.send({ type: "job.result", id: job.id, ok: false, error: error.replace("SERVER", serverName) });
    const reason = shown.replace("SERVER", serverName);
    await vi.waitFor(async () => expect((await serverView(owner.cookie, server.id)).status).toBe("awaiting_delegation"));
    expect((await serverView(owner.cookie, server.id)).statusReason).toBe(`the import failed: ${reason}`);
    expect(await viewOf(owner.cookie, server.id)).toMatchObject({ status: "failed", error: reason });
    expect(await env.BACKUPS.head((await importRow(view.id))!.r2_key)).toBeNull();
    expect(await workloadsOf(server.id)).toBe(0);
    const mail = await mailTo(owner.email, `The import into ${serverName} failed`);
    expect(mail!.text).toContain(`could not be made into ${serverName}: ${reason}.`);
    expect(mail!.text).not.toContain("phish.example");
    expect(mail!.text).not.toContain("/var/lib/berth");
    expect(mail!.links).toEqual([`https://berth.example/servers/${server.id}/import`]);
    // Its owner uploads again.
    expect((await startImport(owner.cookie, server.id, 10)).status).toBe(201);
  });

  it("is its owner's alone, only into a waiting homeserver on their domain, within the plan's storage, one at a time", async () => {
    const { owner, view: server } = await waitingServer();
    const stranger = await subscriber();
    await expectError(await startImport(stranger.cookie, server.id, 10), 404, "not_found");
    await expectError(await importOf(owner.cookie, server.id), 404, "not_found");
    await expectError(await startImport(owner.cookie, server.id, 11 * 1024 ** 3), 413, "archive_too_large");
    await expectError(await startImport(owner.cookie, server.id, 0), 400, "validation_failed");
    expect((await startImport(owner.cookie, server.id, 10)).status).toBe(201);
    await expectError(await startImport(owner.cookie, server.id, 10), 409, "import_under_way");
    await expectError(await sendPart(stranger.cookie, server.id, 1, bytes(10)), 404, "not_found");
    await expectError(await call(`/api/servers/${server.id}/import`, { method: "DELETE", cookie: stranger.cookie }), 404, "not_found");
    await expectError(await importOf(stranger.cookie, server.id), 404, "not_found");
    await expectError(await post(`/api/servers/${server.id}/import/complete`, {}, { cookie: stranger.cookie }), 404, "not_found");
    // Logged out, nothing; a body or a digest not as the API says, a 400 naming it.
    await expectError(await startImport("", server.id, 10), 401);
    await expectError(await sendPart("", server.id, 1, bytes(10)), 401);
    await expectError(await post(`/api/servers/${server.id}/import/complete`, {}), 401);
    await expectError(await call(`/api/servers/${server.id}/import`, { method: "DELETE" }), 401);
    await expectError(await post(`/api/servers/${server.id}/import/complete`, { passphrase: 7 }, { cookie: owner.cookie }), 400, "validation_failed");
    await expectError(await post(`/api/servers/${server.id}/import`, { sizeBytes: "10" }, { cookie: owner.cookie }), 400, "validation_failed");
    await expectError(await sendPart(owner.cookie, server.id, 1, bytes(10), { "x-part-sha256": "not-a-digest" }), 400, "validation_failed");
    expect(((await (await importOf(owner.cookie, server.id)).json()) as ImportView).missingParts).toEqual([1]);

    const running = await runningServer();
    await expectError(await startImport(running.owner.cookie, running.id, 10), 409, "invalid_state");
  });

  it("is taken back by its owner, or with its waiting homeserver, leaving nothing in R2", async () => {
    const { owner, view: server } = await waitingServer();
    expect((await startImport(owner.cookie, server.id, 10)).status).toBe(201);
    expect((await sendPart(owner.cookie, server.id, 1, bytes(10))).status).toBe(200);
    const cancelled = await call(`/api/servers/${server.id}/import`, { method: "DELETE", cookie: owner.cookie });
    expect(cancelled.status).toBe(200);
    const { id } = (await cancelled.json()) as ImportView;
    expect((await importRow(id))!.status).toBe("cancelled");
    expect(await count("SELECT count(*) AS n FROM server_import_parts WHERE import_id = ?", id)).toBe(0);

    const view = await uploadArchive(owner.cookie, server.id, bytes(10, 1));
    const key = (await importRow(view.id))!.r2_key;
    expect(await env.BACKUPS.head(key)).not.toBeNull();
    expect((await call(`/api/servers/${server.id}`, { method: "DELETE", cookie: owner.cookie })).status).toBeLessThan(300);
    expect(await env.BACKUPS.head(key)).toBeNull();
    expect((await importRow(view.id))!.status).toBe("cancelled");
  });
});
