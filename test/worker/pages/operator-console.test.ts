import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { planById } from "../../../worker/billing/plans";
import { formatBytes } from "../../../worker/pages/charts";
import { newcomerMemoryMiB } from "../../../worker/servers/admission";
import { enrollBody, enrolledHost, newKeys, type HostIdentity } from "../fleet/fleet-helpers";
import { call, DAY, HOUR, logIn, post, verifiedUser } from "../helpers";
import { expectLabelled, page } from "./page-checks";

// The operator console without JavaScript: hosts, a host's page and its actions (state, the
// unencrypted-placement override, revocation with its typed confirmation), join tokens, the audit
// log with its filters and pages, and alerts; and who may not use any of it.

const starter = planById("starter")!;
const MIB = 1024 * 1024;
const formHeaders = { "content-type": "application/x-www-form-urlencoded", accept: "text/html" };
const submit = (path: string, fields: Record<string, string>, cookie: string | null, headers: Record<string, string> = {}) =>
  call(path, { method: "POST", rawBody: new URLSearchParams(fields), headers: { ...formHeaders, ...headers }, cookie });

interface AuditRow {
  actor: string;
  action: string;
  target: string | null;
  detail: string | null;
}

async function auditAbout(target: string): Promise<AuditRow[]> {
  const { results } = await env.DB.prepare("SELECT actor, action, target, detail FROM audit_log WHERE target = ? ORDER BY id").bind(target).all<AuditRow>();
  return results;
}

async function hostRow(id: string) {
  return (await env.DB.prepare("SELECT state, status, unencrypted_placement_override AS override FROM hosts WHERE id = ?").bind(id).first<{
    state: string;
    status: string;
    override: number;
  }>())!;
}

async function userIdOf(email: string): Promise<string> {
  return (await env.DB.prepare("SELECT id FROM users WHERE email = ?").bind(email).first<{ id: string }>())!.id;
}

/** A homeserver row on the host, made `ageMs` ago, with an owner of its own (an account has one live homeserver). */
async function homeserverOn(hostId: string, ageMs: number, status = "running"): Promise<{ id: string; name: string }> {
  const id = crypto.randomUUID();
  const name = `hs-${id.slice(0, 8)}`;
  const at = Date.now() - ageMs;
  await env.DB.batch([
    env.DB.prepare("INSERT INTO users (id, email, password_hash, created_at, updated_at) VALUES (?, ?, 'unusable', ?, ?)").bind(
      id,
      `${name}@example.com`,
      at,
      at,
    ),
    env.DB.prepare("INSERT INTO servers (id, user_id, name, region, host_id, status, created_at, updated_at) VALUES (?, ?, ?, 'us-east', ?, ?, ?, ?)").bind(
      id,
      id,
      name,
      hostId,
      status,
      at,
      at,
    ),
  ]);
  return { id, name };
}

describe("the operator console", () => {
  let operator: string;
  let operatorEmail: string;
  let customer: string;
  let host: HostIdentity;
  /** Every page of the console, with a real host's id. */
  let pages: string[];
  /** Every form, with fields that would be accepted from an operator. */
  let forms: Array<[string, Record<string, string>]>;

  beforeAll(async () => {
    const account = await verifiedUser();
    await env.DB.prepare("UPDATE users SET role = 'operator' WHERE email = ?").bind(account.email).run();
    operatorEmail = account.email;
    operator = await logIn(account.email);
    customer = await logIn((await verifiedUser()).email);
    host = await enrolledHost(operator);
    pages = [
      "/operator",
      "/operator/hosts",
      `/operator/hosts/${host.hostId}`,
      `/operator/hosts/${host.hostId}/revoke`,
      "/operator/join-tokens",
      "/operator/audit",
      "/operator/alerts",
      "/operator/legal-exports",
    ];
    forms = [
      [`/operator/hosts/${host.hostId}/state`, { state: "draining", reason: "" }],
      [`/operator/hosts/${host.hostId}/unencrypted-placement`, { allow: "yes", reason: "a test rig" }],
      [`/operator/hosts/${host.hostId}/revoke`, { confirm: host.name }],
      ["/operator/join-tokens", { region: "us-east", minutes: "60" }],
    ];
  });

  async function expectNothingChanged() {
    expect(await hostRow(host.hostId)).toEqual({ state: "active", status: "offline", override: 0 });
    expect((await auditAbout(host.hostId)).map((row) => row.action)).toEqual(["host.enrolled"]);
  }

  it("sends anyone not logged in to the log-in page, for every page, form and address under /operator, changing nothing", async () => {
    const tokensBefore = await env.DB.prepare("SELECT count(*) AS n FROM join_tokens").first<{ n: number }>();
    for (const path of [...pages, "/operator/no-such-page"]) {
      const response = await call(path, { headers: { accept: "text/html" } });
      expect(response.status, path).toBe(303);
      expect(response.headers.get("location")).toBe("/login");
    }
    for (const [path, fields] of forms) {
      const response = await submit(path, fields, null);
      expect(response.status, path).toBe(303);
      expect(response.headers.get("location")).toBe("/login");
    }
    await expectNothingChanged();
    expect(await env.DB.prepare("SELECT count(*) AS n FROM join_tokens").first<{ n: number }>()).toEqual(tokensBefore);
  });

  it("answers a customer exactly as for an address with nothing at it, for every page and form, changing nothing", async () => {
    const missing = await page("/operator/no-such-page", customer, 404);
    expect(missing).toContain("There is nothing at this address.");
    expect(await page("/no-such-page", customer, 404)).toBe(missing);
    for (const path of pages) expect(await page(path, customer, 404), path).toBe(missing);
    for (const [path, fields] of forms) {
      const response = await submit(path, fields, customer);
      expect(response.status, path).toBe(404);
      expect(await response.text()).toBe(missing);
    }
    await expectNothingChanged();
  });

  it("tells an operator whose address is unverified to verify it", async () => {
    const unverified = await verifiedUser();
    await env.DB.prepare("UPDATE users SET role = 'operator', email_verified_at = NULL WHERE email = ?").bind(unverified.email).run();
    const cookie = await logIn(unverified.email);
    expect(await page("/operator/hosts", cookie, 403)).toContain("needs a verified email address");
    expect((await submit(forms[0]![0], forms[0]![1], cookie)).status).toBe(403);
    await expectNothingChanged();
  });

  it("refuses every form posted from another site", async () => {
    for (const [path, fields] of forms) {
      const response = await submit(path, fields, operator, { "sec-fetch-site": "cross-site" });
      expect(response.status, path).toBe(403);
      expect(await response.text()).toContain("Cross-site request refused.");
    }
    await expectNothingChanged();
  });

  it("lists every host with its region, state, connection, agent, capacity, certificates and encryption, and links the console from the dashboard", async () => {
    const html = await page("/operator/hosts", operator);
    expectLabelled(html);
    expect(html).toContain(`<a href="/operator/hosts/${host.hostId}">${host.name}</a>`);
    expect(html).toContain('aria-label="Operator console"');
    expect(html).toContain('<a href="/operator/hosts" aria-current="page">Hosts</a>');
    const card = html.slice(html.indexOf(host.name));
    expect(card).toContain("<dd>us-east</dd>");
    expect(card).toContain('<span class="badge ok">Active</span>');
    expect(card).toContain('<span class="badge bad">offline</span> last seen never');
    expect(card).toContain("<dd>0.1.0</dd>");
    // 8 GiB less the 1 GiB reserve, its plans' limits up to 4 times that, 4 CPUs overcommitted 4 times, 200 GiB; nothing placed.
    expect(card).toContain("Memory: 0 B admitted of 7.5 GB, 7.5 GB free; measured use 0 B");
    expect(card).toContain("Plan limits: 0 B of the 30 GB ceiling (4× its memory)");
    expect(card).toContain("Available as the host reports it: not reported yet");
    expect(card).toContain('<span class="badge ok">Not tight</span>');
    expect(card).toContain("CPUs: 0 used of 16, 16 free");
    expect(card).toContain("Disk: 0 B used of 215 GB, 215 GB free");
    expect(card).toContain("None reported");
    expect(card).toContain("Not reported yet");

    expect(await page("/servers", operator)).toContain('<a href="/operator">open the operator console</a>');
    expect(await page("/servers", customer)).not.toContain("/operator");
    expect(await page("/operator/legal-exports", operator)).toContain('<a href="/operator/legal-exports" aria-current="page">Legal exports</a>');
  });

  it("shows a host's homeservers, jobs and certificates, counting its homeservers' plans as used capacity", async () => {
    const placed = await homeserverOn(host.hostId, HOUR);
    const gone = await homeserverOn(host.hostId, HOUR, "deleted");
    const notAfter = Date.now() + 3 * DAY;
    await env.DB.prepare("INSERT INTO certificates (host_id, server_name, not_before, not_after, issuer, updated_at) VALUES (?, ?, ?, ?, 'Test CA', ?)")
      .bind(host.hostId, `${placed.name}.berth.example`, Date.now() - 60 * DAY, notAfter, Date.now())
      .run();
    try {
      const html = await page(`/operator/hosts/${host.hostId}`, operator);
      expectLabelled(html);
      expect(html).toContain(`<h1>Host ${host.name}</h1>`);
      expect(html).toContain(`${placed.name}.berth.example <span class="hint">${placed.id}</span>`);
      expect(html).not.toContain(gone.name);
      expect(html).toContain("<dd>1</dd>");
      // A homeserver never measured counts for its plan's floor and headroom; its plan's limit counts towards the ceiling.
      expect(html).toContain(`Memory: ${formatBytes(newcomerMemoryMiB(starter) * MIB)} admitted of 7.5 GB`);
      expect(html).toContain(`Plan limits: ${formatBytes(starter.resources.memoryMiB * MIB)} of the 30 GB ceiling`);
      expect(html).toContain("1 served, the next expiring");
      expect(html).toContain('<span class="badge bad">1 expiring soon</span>');
      expect(html).toContain("Test CA");
      expect(html).toContain("No job was sent to this host.");
      expect(html).toContain(`href="/operator/audit?target=${host.hostId}"`);
      expect(html).toContain(`action="/operator/hosts/${host.hostId}/state"`);
      expect(html).toContain(`href="/operator/hosts/${host.hostId}/revoke"`);
    } finally {
      await env.DB.prepare("DELETE FROM certificates WHERE host_id = ?").bind(host.hostId).run();
      await env.DB.prepare("DELETE FROM servers WHERE host_id = ?").bind(host.hostId).run();
    }
    expect(await page(`/operator/hosts/${crypto.randomUUID()}`, operator, 404)).toContain("No such host.");
  });

  it("sets a host's state: refused without a valid state or with a short reason, then changed, audited, and redirected to the host (303)", async () => {
    const path = `/operator/hosts/${host.hostId}/state`;
    const refused = await submit(path, { state: "asleep", reason: "" }, operator);
    expect(refused.status).toBe(400);
    const refusedHtml = await refused.text();
    expectLabelled(refusedHtml);
    expect(refusedHtml).toContain("choose active, draining or out of service");
    const short = await submit(path, { state: "draining", reason: "no" }, operator);
    expect(short.status).toBe(400);
    expect(await short.text()).toMatch(/value="no"/);
    expect((await hostRow(host.hostId)).state).toBe("active");

    const changed = await submit(path, { state: "draining", reason: "kernel update" }, operator);
    expect(changed.status).toBe(303);
    expect(changed.headers.get("location")).toBe(`/operator/hosts/${host.hostId}?notice=host_state_changed`);
    expect((await hostRow(host.hostId)).state).toBe("draining");
    const entry = (await auditAbout(host.hostId)).at(-1)!;
    expect(entry).toMatchObject({ actor: `user:${await userIdOf(operatorEmail)}`, action: "host.state_changed" });
    expect(JSON.parse(entry.detail!)).toEqual({ from: "active", to: "draining", reason: "kernel update" });
    const html = await page(changed.headers.get("location")!, operator);
    expect(html).toContain("The host&#39;s state is changed.");
    expect(html).toContain('<span class="badge warn">Draining</span>');
    expect(html).toMatch(/name="state" value="draining" checked/);

    expect((await submit(path, { state: "active", reason: "" }, operator)).status).toBe(303);
    expect(JSON.parse((await auditAbout(host.hostId)).at(-1)!.detail!)).toEqual({ from: "draining", to: "active" });
  });

  it("records the unencrypted-placement override only with a reason, audited either way", async () => {
    const path = `/operator/hosts/${host.hostId}/unencrypted-placement`;
    const refused = await submit(path, { allow: "yes", reason: "" }, operator);
    expect(refused.status).toBe(400);
    expect(await refused.text()).toContain("must be 3 to 500 characters");
    expect((await hostRow(host.hostId)).override).toBe(0);

    const allowed = await submit(path, { allow: "yes", reason: "lab host, test data only" }, operator);
    expect(allowed.status).toBe(303);
    expect(allowed.headers.get("location")).toBe(`/operator/hosts/${host.hostId}?notice=host_override_allowed`);
    expect((await hostRow(host.hostId)).override).toBe(1);
    const withdrawn = await submit(path, { allow: "no", reason: "encrypted now" }, operator);
    expect(withdrawn.headers.get("location")).toBe(`/operator/hosts/${host.hostId}?notice=host_override_withdrawn`);
    expect((await hostRow(host.hostId)).override).toBe(0);
    const entries = (await auditAbout(host.hostId)).filter((row) => row.action.startsWith("host.unencrypted_placement"));
    expect(entries.map((row) => [row.action, JSON.parse(row.detail!).reason])).toEqual([
      ["host.unencrypted_placement_allowed", "lab host, test data only"],
      ["host.unencrypted_placement_withdrawn", "encrypted now"],
    ]);
  });

  it("revokes a host only when its name is typed, audited once; a second revocation is refused", async () => {
    const other = await enrolledHost(operator);
    const path = `/operator/hosts/${other.hostId}/revoke`;
    const confirmation = await page(path, operator);
    expectLabelled(confirmation);
    expect(confirmation).toContain(`Type the host&#39;s name, ${other.name}, to confirm`);

    for (const confirm of ["", "yes", other.name.toUpperCase(), host.name]) {
      const refused = await submit(path, { confirm }, operator);
      expect(refused.status, confirm).toBe(400);
      expect(await refused.text()).toContain(`Type the host&#39;s name, ${other.name}, to revoke it.`);
    }
    expect((await hostRow(other.hostId)).status).toBe("offline");
    expect((await auditAbout(other.hostId)).map((row) => row.action)).toEqual(["host.enrolled"]);

    const revoked = await submit(path, { confirm: other.name }, operator);
    expect(revoked.status).toBe(303);
    expect(revoked.headers.get("location")).toBe(`/operator/hosts/${other.hostId}?notice=host_revoked`);
    expect((await hostRow(other.hostId)).status).toBe("revoked");
    expect((await auditAbout(other.hostId)).map((row) => row.action)).toEqual(["host.enrolled", "host.revoked"]);
    const html = await page(revoked.headers.get("location")!, operator);
    expect(html).toContain("The host is revoked");
    expect(html).not.toContain(`href="${path}"`);

    const again = await submit(path, { confirm: other.name }, operator);
    expect(again.status).toBe(409);
    expect((await auditAbout(other.hostId)).map((row) => row.action)).toEqual(["host.enrolled", "host.revoked"]);
  });

  it("creates a join token shown once, with the enrollment command, audited; the token enrolls one host", async () => {
    const form = await page("/operator/join-tokens", operator);
    expectLabelled(form);
    expect(form).toMatch(/name="region" value="us-east" checked/);

    const refused = await submit("/operator/join-tokens", { region: "eu-west", minutes: "60" }, operator);
    expect(refused.status).toBe(400);
    expect(await refused.text()).toContain("choose one of us-east, us-west, us-central");
    expect((await submit("/operator/join-tokens", { region: "us-west", minutes: "100000" }, operator)).status).toBe(400);

    const created = await submit("/operator/join-tokens", { region: "us-west", minutes: "30" }, operator);
    expect(created.status).toBe(200);
    const html = await created.text();
    expectLabelled(html);
    const token = /<pre id="join-token"[^>]*>(bjt_[A-Za-z0-9_-]+)<\/pre>/.exec(html)?.[1];
    expect(token).toBeDefined();
    expect(html).toContain(`BERTH_AGENT_JOIN_TOKEN=&#39;${token}&#39; berth-agent enroll --url http://localhost`);
    expect(html).toContain('<script src="/assets/operator.js" defer=""></script>');
    expect(created.headers.get("cache-control")).toBe("no-store");

    const { results } = await env.DB.prepare("SELECT detail FROM audit_log WHERE action = 'join_token.created' AND actor = ? ORDER BY id DESC LIMIT 1")
      .bind(`user:${await userIdOf(operatorEmail)}`)
      .all<{ detail: string }>();
    expect(JSON.parse(results[0]!.detail)).toMatchObject({ region: "us-west" });
    expect(results[0]!.detail).not.toContain(token!);

    expect(await page("/operator/join-tokens", operator)).not.toContain(token!);
    const { publicKey } = await newKeys();
    const enrolled = await post("/api/agent/enroll", enrollBody(token!, publicKey));
    expect(enrolled.status).toBe(201);
    expect(await enrolled.json()).toMatchObject({ region: "us-west" });
    expect((await post("/api/agent/enroll", enrollBody(token!, (await newKeys()).publicKey))).status).toBe(400);

    const script = await call("/assets/operator.js");
    expect(script.headers.get("content-type")).toMatch(/^text\/javascript/);
    expect(await script.text()).toContain("navigator.clipboard.writeText");
  });

  it("filters the audit log by action, family, target, actor (an email or a host's name) and time, refusing a time it cannot read", async () => {
    const base = "/operator/audit";
    const byTarget = await page(`${base}?action=host.state_changed&target=${host.hostId}`, operator);
    expectLabelled(byTarget);
    expect(byTarget.match(/<td>host\.state_changed<\/td>/g)).toHaveLength(2);
    expect(byTarget).toContain(`${operatorEmail} <span class="hint">user:`);
    expect(byTarget).toContain('value="host.state_changed"');
    expect(byTarget).not.toContain("<td>host.enrolled</td>");

    const family = await page(`${base}?action=host&target=${host.hostId}`, operator);
    expect(family).toContain("<td>host.enrolled</td>");
    expect(family).toContain("<td>host.state_changed</td>");
    // "host" is a family, not a prefix: "host_x" would not match, nor does "hos".
    expect(await page(`${base}?action=hos&target=${host.hostId}`, operator)).toContain("No entry matches.");

    const byEmail = await page(`${base}?actor=${encodeURIComponent(operatorEmail.toUpperCase())}&target=${host.hostId}`, operator);
    expect(byEmail).toContain("<td>host.state_changed</td>");
    expect(byEmail).not.toContain("<td>host.enrolled</td>");
    const byHostName = await page(`${base}?actor=${host.name}`, operator);
    expect(byHostName).toContain("<td>host.enrolled</td>");
    expect(byHostName).not.toContain("<td>host.state_changed</td>");
    expect(await page(`${base}?actor=nobody%40example.com`, operator)).toContain("No entry matches.");

    const future = new Date(Date.now() + DAY).toISOString().slice(0, 16);
    expect(await page(`${base}?target=${host.hostId}&from=${future}`, operator)).toContain("No entry matches.");
    expect(await page(`${base}?target=${host.hostId}&until=${future}`, operator)).toContain("<td>host.enrolled</td>");
    const refused = await page(`${base}?from=yesterday`, operator, 400);
    expect(refused).toContain("From must be a date and time such as 2026-01-31T09:00.");
    expect(refused).toContain('value="yesterday"');
    expect(await page(`${base}?before=abc`, operator, 400)).toContain("That page of the log does not exist");
  });

  it("pages through the audit log 50 entries at a time, keeping the filters", async () => {
    const target = `paging-${crypto.randomUUID()}`;
    const statements = Array.from({ length: 55 }, (_, index) =>
      env.DB.prepare("INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, 'system', 'test.paged', ?, ?)").bind(
        Date.now(),
        target,
        JSON.stringify({ index }),
      ),
    );
    await env.DB.batch(statements);
    const first = await page(`/operator/audit?target=${target}`, operator);
    expect(first.match(/<td>test\.paged<\/td>/g)).toHaveLength(50);
    expect(first).toContain("{&quot;index&quot;:54}");
    expect(first).not.toContain("{&quot;index&quot;:4}");
    const older = /href="(\/operator\/audit\?target=[^"]+&amp;before=\d+)">Older entries/.exec(first)?.[1];
    expect(older).toBeDefined();
    const second = await page(older!.replaceAll("&amp;", "&"), operator);
    expect(second.match(/<td>test\.paged<\/td>/g)).toHaveLength(5);
    expect(second).toContain("{&quot;index&quot;:4}");
    expect(second).toContain("{&quot;index&quot;:0}");
    expect(second).not.toContain(">Older entries</a>");
    expect(second).toContain(`href="/operator/audit?target=${target}">Newest entries`);
  });

  it("lists homeservers whose last successful backup is older than 26 hours, and storage alerts, with a link to legal exports", async () => {
    const never = await homeserverOn(host.hostId, 2 * DAY);
    const young = await homeserverOn(host.hostId, HOUR);
    const fresh = await homeserverOn(host.hostId, 3 * DAY);
    const stale = await homeserverOn(host.hostId, 3 * DAY);
    const deleted = await homeserverOn(host.hostId, 3 * DAY, "deleted");
    const failed = await homeserverOn(host.hostId, 3 * DAY, "failed");
    const backup = (serverId: string, status: string, ageMs: number, error: string | null = null) =>
      env.DB.prepare(
        "INSERT INTO backups (id, server_id, host_id, trigger, status, r2_key, upload_id, part_size, error, job_id, created_at) VALUES (?, ?, ?, 'scheduled', ?, ?, 'upload', 1, ?, ?, ?)",
      ).bind(crypto.randomUUID(), serverId, host.hostId, status, `backups/${crypto.randomUUID()}`, error, crypto.randomUUID(), Date.now() - ageMs);
    await env.DB.batch([backup(fresh.id, "succeeded", 2 * HOUR), backup(stale.id, "succeeded", 30 * HOUR), backup(stale.id, "failed", 5 * HOUR, "disk full")]);
    await env.DB.prepare("INSERT INTO storage_alerts (server_id, threshold, crossed_at, notified_at, used_bytes, quota_bytes) VALUES (?, 0.95, ?, ?, ?, ?)")
      .bind(fresh.id, Date.now() - HOUR, Date.now() - HOUR, 9.6e9, 1e10)
      .run();
    try {
      const html = await page("/operator/alerts", operator);
      expectLabelled(html);
      const late = html.slice(html.indexOf("Late backups"), html.indexOf("Storage quotas"));
      expect(late).toContain(`${never.name}.berth.example`);
      expect(late).toContain(`${stale.name}.berth.example`);
      expect(late).toContain("disk full");
      expect(late).not.toContain(young.name);
      expect(late).not.toContain(fresh.name);
      // Only homeservers backed up daily (running, stopped, suspended) are late.
      expect(late).not.toContain(deleted.name);
      expect(late).not.toContain(failed.name);
      expect(late.indexOf(never.name)).toBeLessThan(late.indexOf(stale.name));
      const storage = html.slice(html.indexOf("Storage quotas"));
      expect(storage).toContain(`${fresh.name}.berth.example`);
      expect(storage).toContain("<td>95 %</td>");
      expect(storage).toContain("9.6 GB of 10 GB (96 %)");
      expect(html).toContain('<a href="/operator/legal-exports">legal exports</a>');
    } finally {
      await env.DB.prepare("DELETE FROM storage_alerts WHERE server_id = ?").bind(fresh.id).run();
      await env.DB.prepare("DELETE FROM backups WHERE host_id = ?").bind(host.hostId).run();
      await env.DB.prepare("DELETE FROM servers WHERE host_id = ?").bind(host.hostId).run();
    }
  });
});
