import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { generateAgeKeyPair } from "../../../agent/backup/age";
import { operatorCookie } from "../fleet/fleet-helpers";
import { call, logIn, verifiedUser } from "../helpers";
import { administeredServer, nextJob, userIdOf, type AdministeredServer } from "../servers/administration-helpers";
import { expectLabelled, page } from "./page-checks";

// The operators' legal-export pages without JavaScript: the list, the request form with its
// confirmation step (the same service as the admin API), one export with its audit trail; and who
// may not use them.

const LIST = "/operator/legal-exports";
const recipient = generateAgeKeyPair().recipient;
const formHeaders = { "content-type": "application/x-www-form-urlencoded" };
const submit = (fields: Record<string, string>, cookie: string, headers: Record<string, string> = {}) =>
  call(LIST, { method: "POST", rawBody: new URLSearchParams(fields), headers: { ...formHeaders, accept: "text/html", ...headers }, cookie });

async function exportCount(serverId: string): Promise<number> {
  return (await env.DB.prepare("SELECT count(*) AS n FROM legal_exports WHERE server_id = ?").bind(serverId).first<{ n: number }>())!.n;
}

async function emailOf(cookie: string): Promise<string> {
  return ((await (await call("/api/me", { cookie })).json()) as { email: string }).email;
}

describe("the legal-export pages", () => {
  let server: AdministeredServer;
  let operator: string;
  let form: Record<string, string>;

  beforeAll(async () => {
    server = await administeredServer();
    operator = await operatorCookie();
    form = {
      server: server.serverName,
      reference: `Court order ${crypto.randomUUID().slice(0, 8)}`,
      users: `@alice:${server.serverName}\n@bob:${server.serverName}`,
      rooms: "",
      from: "2026-01-01T00:00",
      until: "",
      content: "yes",
      recipient,
      notice: "given",
      reason: "",
    };
  });

  it("sends anyone not logged in to the log-in page, for every page and the form, recording nothing", async () => {
    for (const path of [LIST, `${LIST}/new`, `${LIST}/${crypto.randomUUID()}`]) {
      const response = await call(path, { headers: { accept: "text/html" } });
      expect(response.status).toBe(303);
      expect(response.headers.get("location")).toBe("/login");
    }
    const posted = await call(LIST, { method: "POST", rawBody: new URLSearchParams({ ...form, step: "request" }), headers: formHeaders });
    expect(posted.status).toBe(303);
    expect(posted.headers.get("location")).toBe("/login");
    expect(await exportCount(server.id)).toBe(0);
  });

  it("answers a customer (the server's owner too) as for an address with nothing at it, and tells an unverified operator to verify, recording nothing", async () => {
    const missing = await page("/operator/no-such-page", server.owner.cookie, 404);
    for (const path of [LIST, `${LIST}/new`]) expect(await page(path, server.owner.cookie, 404)).toBe(missing);
    const posted = await submit({ ...form, step: "request" }, server.owner.cookie);
    expect(posted.status).toBe(404);
    expect(await exportCount(server.id)).toBe(0);

    const unverified = await verifiedUser();
    await env.DB.prepare("UPDATE users SET role = 'operator', email_verified_at = NULL WHERE email = ?").bind(unverified.email).run();
    expect(await page(LIST, await logIn(unverified.email), 403)).toContain("needs a verified email address");
  });

  it("refuses a form posted from another site", async () => {
    const response = await submit({ ...form, step: "request" }, operator, { "sec-fetch-site": "cross-site" });
    expect(response.status).toBe(403);
    expect(await response.text()).toContain("Cross-site request refused.");
    expect(await exportCount(server.id)).toBe(0);
  });

  it("shows an empty form with labelled fields, the homeserver filled in from a link", async () => {
    const html = await page(`${LIST}/new?server=${server.id}`, operator);
    expectLabelled(html);
    expect(html).toContain(`<input id="field-server" name="server" type="text" value="${server.id}"`);
    expect(html).toContain(`action="${LIST}"`);
  });

  it("refuses a form with mistakes, naming each, keeping what was typed, and records and sends nothing", async () => {
    const refused = await submit(
      { ...form, server: "no-such-server", users: "@alice:example.org\nbob", recipient: "ssh-ed25519 AAAA", notice: "barred", reason: "" },
      operator,
    );
    expect(refused.status).toBe(400);
    const html = await refused.text();
    expectLabelled(html);
    expect(html).toContain("No homeserver has the id or name “no-such-server”.");
    expect(html).toContain("“bob” is not a Matrix user id");
    expect(html).toContain("The recipient must be an age X25519 recipient");
    expect(html).toContain("Give the legal ground for barring notice");
    expect(html).toContain("@alice:example.org\nbob</textarea>");
    expect(html).toMatch(/id="field-reference" name="reference" type="text" value="Court order /);
    expect(html).toContain('value="ssh-ed25519 AAAA"');
    expect(html).toMatch(/name="notice" value="barred" checked/);
    expect(html).toMatch(/name="content" value="yes" checked/);

    const inverted = await submit({ ...form, from: "2026-02-01T00:00", until: "2026-01-01T00:00" }, operator);
    expect(inverted.status).toBe(400);
    expect(await inverted.text()).toContain("From must come before until.");
    const reasonWithNotice = await submit({ ...form, reason: "a stray reason" }, operator);
    expect(reasonWithNotice.status).toBe(400);
    expect(await reasonWithNotice.text()).toContain("A reason is recorded only when notice is barred");
    // The confirmed step checks everything again.
    expect((await submit({ ...form, recipient: "age1nope", step: "request" }, operator)).status).toBe(400);
    expect(await exportCount(server.id)).toBe(0);
  });

  it("asks for confirmation, saying what will be exported and who will see it, and goes back to the form to change it", async () => {
    const review = await submit({ ...form, step: "review" }, operator);
    expect(review.status).toBe(200);
    const html = await review.text();
    expectLabelled(html);
    expect(html).toContain("<h1>Confirm the legal export</h1>");
    expect(html).toContain(server.serverName);
    expect(html).toContain(form.reference);
    expect(html).toContain(`<code>@alice:${server.serverName}</code>, <code>@bob:${server.serverName}</code>`);
    expect(html).toContain("Events and memberships from 2026-01-01 00:00 UTC onwards.");
    expect(html).toContain("encrypted rooms&#39; events as the ciphertext they are");
    expect(html).toContain("its owner&#39;s account (email, when it was created and verified), subscriptions and invoices");
    expect(html).toContain(`The customer (${server.owner.email}) sees this request`);
    expect(html).toContain(recipient);
    expect(html).toContain(`<input type="hidden" name="reference" value="${form.reference}"`);
    expect(await exportCount(server.id)).toBe(0);

    const edit = await submit({ ...form, step: "edit" }, operator);
    expect(edit.status).toBe(200);
    const again = await edit.text();
    expect(again).toContain("<h1>Request a legal export</h1>");
    expect(again).toContain(`@alice:${server.serverName}\n@bob:${server.serverName}</textarea>`);
    expect(await exportCount(server.id)).toBe(0);
  });

  it("requests the export once confirmed: audited, sent to the host, redirected to its page (303), listed; another operator sees it", async () => {
    const response = await submit({ ...form, step: "request" }, operator);
    expect(response.status).toBe(303);
    const location = response.headers.get("location")!;
    const exportId = new RegExp(`^${LIST}/([0-9a-f-]{36})\\?notice=requested$`).exec(location)?.[1];
    expect(exportId).toBeDefined();

    const job = await nextJob(server, "homeserver.legal_export");
    expect(job.payload).toMatchObject({
      serverId: server.id,
      exportId,
      reference: form.reference,
      recipient,
      scope: { users: [`@alice:${server.serverName}`, `@bob:${server.serverName}`], rooms: [], from: Date.UTC(2026, 0, 1), content: true },
    });
    const operatorId = await userIdOf(await emailOf(operator));
    const audited = await env.DB.prepare("SELECT actor, target, detail FROM audit_log WHERE action = 'legal_export.requested' AND target = ?")
      .bind(server.id)
      .all<{ actor: string; target: string; detail: string }>();
    expect(audited.results.map((row) => ({ ...row, detail: JSON.parse(row.detail) as unknown }))).toEqual([
      { actor: `user:${operatorId}`, target: server.id, detail: { exportId, serverId: server.id, reference: form.reference, scope: job.payload.scope } },
    ]);

    const own = await page(location, operator);
    expectLabelled(own);
    expect(own).toContain("The export is requested");
    expect(own).toContain(`<h1>Legal export ${form.reference}</h1>`);
    expect(own).toContain("legal_export.requested");
    expect(own).toContain(await emailOf(operator));

    const another = await operatorCookie();
    const list = await page(LIST, another);
    expectLabelled(list);
    expect(list).toContain(`<a href="${LIST}/${exportId}">${form.reference}</a>`);
    expect(list).toContain("2 users; all rooms; from 2026-01-01 00:00 UTC; with content");
    expect(await page(`${LIST}/${exportId}`, another)).toContain(form.reference);
    // A customer gets the page of an address with nothing at it for an export's page too, even one of their own server.
    expect(await page(`${LIST}/${exportId}`, server.owner.cookie, 404)).toContain("There is nothing at this address.");
    expect(own).toContain("Requested: waiting for the host");
    expect(own).not.toContain("/files/homeserver");

    // Once both files are stored the page offers them (retention's deletion takes the links away again).
    await env.DB.prepare(
      `UPDATE legal_exports SET status = 'ready', size_bytes = 2048, worker_size_bytes = 1024, finished_at = ?,
       records_json = '{"users":2,"rooms":1,"memberships":3,"events":9}' WHERE id = ?`,
    )
      .bind(Date.UTC(2026, 5, 1), exportId)
      .run();
    const ready = await page(`${LIST}/${exportId}`, another);
    expectLabelled(ready);
    expect(ready).toContain("Ready since 2026-06-01 00:00 UTC");
    expect(ready).toContain(`href="/api/admin/legal-exports/${exportId}/files/homeserver"`);
    expect(ready).toContain(`href="/api/admin/legal-exports/${exportId}/files/worker"`);
    expect(ready).toContain("2 users, 1 rooms, 3 memberships, 9 events");
    await env.DB.prepare("UPDATE legal_exports SET files_deleted_at = ? WHERE id = ?")
      .bind(Date.UTC(2026, 6, 1), exportId)
      .run();
    const deleted = await page(`${LIST}/${exportId}`, another);
    expect(deleted).toContain("its files were deleted 2026-07-01 00:00 UTC (retention)");
    expect(deleted).not.toContain("/files/homeserver");
  });

  it("records a barred notice with its reason, shown on the export's page and in the list, named by the server's id or name", async () => {
    const reason = "non-disclosure order under the warrant";
    const name = server.serverName.split(".")[0]!;
    const reference = `Sealed warrant ${crypto.randomUUID().slice(0, 8)}`;
    const review = await submit({ ...form, server: name, reference, users: "", notice: "barred", reason, content: "no" }, operator);
    expect(review.status).toBe(200);
    const confirm = await review.text();
    expect(confirm).toContain("is <strong>not told</strong>");
    expect(confirm).toContain(reason);
    expect(confirm).toContain("Metadata only: no event&#39;s content.");

    const response = await submit({ ...form, server: server.id, reference, users: "", notice: "barred", reason, content: "no", step: "request" }, operator);
    expect(response.status).toBe(303);
    await nextJob(server, "homeserver.legal_export");
    const html = await page(response.headers.get("location")!, operator);
    expect(html).toContain(`Legally barred: ${reason}`);
    expect(html).toContain("legal_export.notice_barred");
    expect(html).toContain(reason);
    expect(await page(LIST, operator)).toMatch(
      new RegExp(
        `${reference}</a></h2><dl class="facts"><dt>Homeserver</dt><dd>[^<]+</dd><dt>Scope</dt><dd>all users; all rooms; from [^<]+; metadata only</dd>.*?<dt>Notice</dt><dd>Legally barred</dd>`,
      ),
    );
  });

  it("shows the service's refusal in the form, keeping the input: a deleted homeserver cannot be exported", async () => {
    const deleted = await administeredServer();
    await env.DB.prepare("UPDATE servers SET status = 'deleted' WHERE id = ?").bind(deleted.id).run();
    const response = await submit({ ...form, server: deleted.id, step: "request" }, operator);
    expect(response.status).toBe(409);
    const html = await response.text();
    expect(html).toContain("Only a homeserver on a host can be exported.");
    expect(html).toContain(`value="${deleted.id}"`);
    expect(html).toContain(`@alice:${server.serverName}\n@bob:${server.serverName}</textarea>`);
    expect(await exportCount(deleted.id)).toBe(0);
  });

  it("answers an export id that does not exist with a 404 page", async () => {
    expect(await page(`${LIST}/${crypto.randomUUID()}`, operator, 404)).toContain("No such legal export.");
  });
});
