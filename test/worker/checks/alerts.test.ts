import { env } from "cloudflare:workers";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { CHECK_DIGEST_HOUR, fleetCheckStatus, mailCheckFailureDigest, noteCheckFailures } from "../../../worker/checks/alerts";
import { workContext } from "../../../worker/context";
import type { HostIdentity } from "../fleet/fleet-helpers";
import { HOUR, mailbox, runCron, setNow, verifiedUser } from "../helpers";
import { fleetWithOperator, homeserverOn, recordResult } from "./check-helpers";

// Operators hear about failing promise checks: an audit entry and a log line per failing run, and a
// daily digest mailed to the operators alone.

afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

interface AuditRow {
  actor: string;
  action: string;
  target: string | null;
  detail: string | null;
}

async function checkAudits(target: string): Promise<AuditRow[]> {
  const { results } = await env.DB.prepare("SELECT actor, action, target, detail FROM audit_log WHERE target = ? AND action = 'check.failed' ORDER BY id")
    .bind(target)
    .all<AuditRow>();
  return results;
}

/** The hour of the digest on day `day` of March 2031, at minute `minute`. */
const digestHour = (day: number, minute = 5) => new Date(Date.UTC(2031, 2, day, CHECK_DIGEST_HOUR, minute));

describe("promise check alerts", () => {
  let operatorEmail: string;
  let customerEmail: string;
  let host: HostIdentity;

  beforeAll(async () => {
    const fleet = await fleetWithOperator();
    operatorEmail = fleet.operator.email;
    customerEmail = fleet.customer.email;
    host = fleet.host;
  });

  it("mails the digest to verified operators only, with ids and our own findings but no customer's email", async () => {
    const server = await homeserverOn(host.hostId);
    const at = digestHour(1);
    await recordResult(server, "isolation", "fails", new Date(at.getTime() - 3 * HOUR), "A container has the capability NET_ADMIN.");
    const unverified = await verifiedUser();
    await env.DB.prepare("UPDATE users SET role = 'operator', email_verified_at = NULL WHERE email = ?").bind(unverified.email).run();

    expect(await mailCheckFailureDigest(workContext(env, at))).toBe(1);

    expect(await mailbox(customerEmail)).toHaveLength(1); // its verification mail only
    expect(await mailbox(server.email)).toEqual([]);
    expect((await mailbox(unverified.email)).filter((mail) => mail.subject.includes("promise check"))).toEqual([]);
    const [digest] = (await mailbox(operatorEmail)).filter((mail) => mail.subject.includes("promise check"));
    expect(digest!.subject).toBe("[Berth operators] 1 promise check failure in the last 24 hours");
    expect(digest!.text).toContain(
      `isolation on ${server.name}.berth.example (server ${server.id}, account ${server.userId}, host ${host.hostId}): A container has the capability NET_ADMIN.`,
    );
    expect(digest!.text).not.toContain("@");
  });

  it("writes one audit entry and one log line per failing result, naming check, server and host, and none twice for the same row", async () => {
    const server = await homeserverOn(host.hostId);
    const warnings: string[] = [];
    vi.spyOn(console, "warn").mockImplementation((line: unknown) => void warnings.push(String(line)));
    const now = new Date();
    const rows = [
      await recordResult(server, "certificates", "fails", now, "The certificate expires in 2 days."),
      await recordResult(server, "isolation", "holds", now),
      await recordResult(server, "disk-encryption", "could_not_check", now),
      await recordResult(server, "encryption-by-default", "fails", now, "Private rooms are not encrypted by default."),
    ];
    const ctx = workContext(env, now);

    expect(await noteCheckFailures(ctx, rows)).toBe(2);
    expect(await noteCheckFailures(ctx, rows)).toBe(0);
    expect(await noteCheckFailures(ctx, [rows[0]!])).toBe(0);

    const entries = await checkAudits(server.id);
    expect(entries.map((entry) => ({ ...entry, detail: JSON.parse(entry.detail!) }))).toEqual(
      [rows[0]!, rows[3]!].map((row) => ({
        actor: "system",
        action: "check.failed",
        target: server.id,
        detail: { resultId: row.id, checkId: row.checkId, serverId: server.id, hostId: host.hostId, summary: row.summary },
      })),
    );
    expect(warnings.map((line) => JSON.parse(line))).toEqual(
      [rows[0]!, rows[3]!].map((row) => ({ event: "check_failed", resultId: row.id, checkId: row.checkId, serverId: server.id, hostId: host.hostId })),
    );
  });

  it("alerts again for each later run that fails: one entry per failing run", async () => {
    const server = await homeserverOn(host.hostId);
    vi.spyOn(console, "warn").mockImplementation(() => {});
    const first = await recordResult(server, "backups", "fails", new Date(Date.now() - 24 * HOUR));
    const second = await recordResult(server, "backups", "fails", new Date());
    const ctx = workContext(env, new Date());
    expect(await noteCheckFailures(ctx, [first])).toBe(1);
    expect(await noteCheckFailures(ctx, [second])).toBe(1);
    expect((await checkAudits(server.id)).map((entry) => JSON.parse(entry.detail!).resultId)).toEqual([first.id, second.id]);
  });

  it("is sent by the hourly cron once in its hour, however often the cron runs then, and not in other hours", async () => {
    const server = await homeserverOn(host.hostId);
    const at = digestHour(3);
    await recordResult(server, "software", "fails", new Date(at.getTime() - HOUR));
    const digests = async () => (await mailbox(operatorEmail)).filter((mail) => mail.subject.includes("promise check")).length;
    const before = await digests();

    for (const run of [new Date(at.getTime() - HOUR), at, digestHour(3, 55)]) {
      setNow(run);
      await runCron(run);
    }
    expect(await digests()).toBe(before + 1);
  });

  it("leaves a customer's broken delegation to its owner: no audit entry, log line, console entry or digest (it quotes their domain's documents)", async () => {
    const server = await homeserverOn(host.hostId);
    const warnings: string[] = [];
    vi.spyOn(console, "warn").mockImplementation((line: unknown) => void warnings.push(String(line)));
    const at = digestHour(7);
    const quoted = 'Delegation from acme.test is broken: https://acme.test/.well-known/matrix/server says "m.server": "call +1 555 0100 now", not "x:443".';
    const row = await recordResult(server, "delegation", "fails", new Date(at.getTime() - HOUR), quoted);
    const ctx = workContext(env, at);

    expect(await noteCheckFailures(ctx, [row])).toBe(0);
    expect(await checkAudits(server.id)).toEqual([]);
    expect(warnings).toEqual([]);
    expect((await fleetCheckStatus(ctx.db)).failing.filter((failing) => failing.serverId === server.id)).toEqual([]);
    const before = (await mailbox(operatorEmail)).length;
    expect(await mailCheckFailureDigest(ctx)).toBe(0);
    expect(await mailbox(operatorEmail)).toHaveLength(before);
  });

  it("sends no digest when nothing failed in the last 24 hours", async () => {
    const server = await homeserverOn(host.hostId);
    const at = digestHour(5);
    await recordResult(server, "software", "fails", new Date(at.getTime() - 25 * HOUR));
    await recordResult(server, "software", "holds", new Date(at.getTime() - HOUR));
    await recordResult(server, "backups", "could_not_check", new Date(at.getTime() - HOUR));
    const before = (await mailbox(operatorEmail)).length;

    expect(await mailCheckFailureDigest(workContext(env, at))).toBe(0);
    expect(await mailbox(operatorEmail)).toHaveLength(before);
  });
});
