import { and, eq } from "drizzle-orm";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { planById } from "../../../worker/billing/plans";
import { workContext } from "../../../worker/context";
import { hosts, servers } from "../../../worker/db/schema";
import { insertWhere } from "../../../worker/db/conditional-insert";
import {
  admittedCount,
  CPU_OVERCOMMIT,
  HOST_RESERVED_MEMORY_MIB,
  MEASURED_AFTER_MS,
  MEMORY_HEADROOM_MIB,
  MEMORY_OVERCOMMIT,
  newcomerMemoryMiB,
} from "../../../worker/servers/admission";
import { hasRoomSql, placementCandidates, takesPlacementsSql } from "../../../worker/servers/placement";
import { expectError, logIn, post, PRODUCTION, verifiedUser } from "../helpers";
import { operatorCookie } from "../fleet/fleet-helpers";

/** Development's context, or with `settings` over it (production's, say). */
const context = (settings = {}) => workContext({ ...env, ...settings }, new Date());
const starter = planById("starter")!;
const region = () => `test-${crypto.randomUUID().slice(0, 8)}`;

async function host(region: string, memoryMiB: number, cpus: number, disk: { encrypted: boolean; agentFlag?: boolean } = { encrypted: true }) {
  const id = crypto.randomUUID();
  await env.DB.prepare(
    `INSERT INTO hosts (id, name, region, memory_mib, cpus, disk_gib, public_key, status, agent_version, disk_encrypted, allow_unencrypted, enrolled_at)
     VALUES (?, ?, ?, ?, ?, 1000, 'key', 'online', 'test', ?, ?, ?)`,
  )
    .bind(id, `host-${id}`, region, memoryMiB, cpus, disk.encrypted ? 1 : 0, disk.agentFlag ? 1 : 0, Date.now())
    .run();
  return id;
}

/** How long ago each placed homeserver was first measured, and what its peak is. */
interface Measured {
  peakMiB: number;
  sinceMs: number;
}

/**
 * Places starter servers as creation does (a conditional insert on hasRoomSql) until none fits;
 * how many did. The snapshot placementCandidates reads must agree with the statement.
 */
async function fill(region: string, measured?: Measured): Promise<number> {
  const ctx = context();
  for (let placed = 0; ; placed++) {
    const [chosen] = await placementCandidates(ctx, region, starter);
    const hostId = chosen?.id ?? (await env.DB.prepare("SELECT id FROM hosts WHERE region = ?").bind(region).first<{ id: string }>())!.id;
    const id = crypto.randomUUID();
    // One live server per account: each placed server gets an owner of its own.
    await env.DB.prepare("INSERT INTO users (id, email, password_hash, created_at, updated_at) VALUES (?, ?, 'x', ?, ?)")
      .bind(id, `${id}@example.com`, Date.now(), Date.now())
      .run();
    const row = {
      id,
      userId: id,
      name: `s-${id.slice(0, 12)}`,
      region,
      hostId,
      planId: starter.id,
      status: "running" as const,
      createdAt: ctx.now,
      ...(measured ? { measuredMemoryMiB: measured.peakMiB, memoryMeasuredSince: new Date(ctx.now.getTime() - measured.sinceMs) } : {}),
    };
    await insertWhere(ctx.db, servers, row, hasRoomSql(hostId, starter, ctx.now));
    const inserted = await env.DB.prepare("SELECT count(*) AS n FROM servers WHERE id = ?").bind(id).first<{ n: number }>();
    expect(inserted!.n, "the statement admits exactly when the snapshot does").toBe(chosen ? 1 : 0);
    if (!chosen) return placed;
  }
}

describe("placement", () => {
  it(`counts a homeserver not yet measured at its plan's floor plus ${MEMORY_HEADROOM_MIB} MiB (less ${HOST_RESERVED_MEMORY_MIB} MiB for the host), and lets CPU caps add up to ${CPU_OVERCOMMIT}× the cores`, async () => {
    const memoryBound = region();
    await host(memoryBound, 4096, 8);
    expect(await fill(memoryBound)).toBe(Math.floor((4096 - HOST_RESERVED_MEMORY_MIB) / newcomerMemoryMiB(starter)));

    const cpuBound = region();
    await host(cpuBound, 24 * 1024, 2);
    expect(await fill(cpuBound)).toBe((2 * CPU_OVERCOMMIT) / starter.resources.cpus);
  });

  it("counts a homeserver measured for an hour at its measured peak plus headroom, not its plan's limit", async () => {
    const measured = region();
    await host(measured, 8192, 64);
    const peakMiB = 300;
    const admitted = await fill(measured, { peakMiB, sinceMs: MEASURED_AFTER_MS });
    expect(admitted).toBe(Math.floor((8192 - HOST_RESERVED_MEMORY_MIB) / (peakMiB + MEMORY_HEADROOM_MIB)));
    expect(admitted).toBe(admittedCount(8192, peakMiB, starter));
    // Twice as many as reserving each plan's full limit would (7 on this host).
    expect(admitted).toBeGreaterThan(2 * Math.floor((8192 - HOST_RESERVED_MEMORY_MIB) / starter.resources.memoryMiB));
  });

  it("counts a homeserver measured for less than an hour at its plan's floor at least: its peak may not have shown yet", async () => {
    const fresh = region();
    await host(fresh, 4096, 64);
    const admitted = await fill(fresh, { peakMiB: 50, sinceMs: MEASURED_AFTER_MS - 60_000 });
    expect(admitted).toBe(Math.floor((4096 - HOST_RESERVED_MEMORY_MIB) / newcomerMemoryMiB(starter)));
  });

  it(`stops at the overcommit ceiling: the plans' limits add up to at most ${MEMORY_OVERCOMMIT}× the memory, however little a host says its homeservers use`, async () => {
    const packed = region();
    await host(packed, 4096, 64);
    // A host reporting nothing used (figures clamp at 0) still has each homeserver count its headroom, and the ceiling binds first.
    const admitted = await fill(packed, { peakMiB: 0, sinceMs: 2 * MEASURED_AFTER_MS });
    expect(admitted).toBe(((4096 - HOST_RESERVED_MEMORY_MIB) * MEMORY_OVERCOMMIT) / starter.resources.memoryMiB);
    expect(admitted).toBe(admittedCount(4096, 0, starter));
  });

  it("counts a homeserver that moves or changes plan for its own peak (at least the new plan's floor while new), under the ceiling of the new plan's limit", async () => {
    const ctx = context();
    const target = await host(region(), HOST_RESERVED_MEMORY_MIB + 300, 64);
    const elsewhere = await host(region(), 8192, 64);
    const id = crypto.randomUUID();
    await env.DB.prepare("INSERT INTO users (id, email, password_hash, created_at, updated_at) VALUES (?, ?, 'x', ?, ?)")
      .bind(id, `${id}@example.com`, Date.now(), Date.now())
      .run();
    await env.DB.prepare(
      "INSERT INTO servers (id, user_id, name, region, host_id, plan_id, status, measured_memory_mib, memory_measured_since, created_at) VALUES (?, ?, ?, 'r', ?, 'starter', 'running', 100, ?, ?)",
    )
      .bind(id, id, `s-${id.slice(0, 12)}`, elsewhere, ctx.now.getTime() - 2 * MEASURED_AFTER_MS, Date.now())
      .run();
    const fits = async (plan: typeof starter) =>
      (
        await ctx.db
          .select({ id: hosts.id })
          .from(hosts)
          .where(and(eq(hosts.id, target), hasRoomSql(target, plan, ctx.now, id)))
      ).length === 1;
    // 100 MiB measured plus headroom fits in 300 MiB; a Starter never measured (384 MiB) would not.
    expect(100 + MEMORY_HEADROOM_MIB).toBeLessThanOrEqual(300);
    expect(newcomerMemoryMiB(starter)).toBeGreaterThan(300);
    expect(await fits(starter)).toBe(true);
    // Team's 2 GiB limit is more than 4× the 300 MiB the host gives homeservers.
    expect(await fits(planById("team")!)).toBe(false);

    await env.DB.prepare("UPDATE servers SET memory_measured_since = ? WHERE id = ?").bind(ctx.now.getTime(), id).run();
    expect(await fits(starter)).toBe(false);
  });

  it("puts customer data only on encrypted hosts; in production the agent's own flag is not enough, an operator's override is", async () => {
    const flagged = region();
    const id = await host(flagged, 4096, 2, { encrypted: false, agentFlag: true });
    expect((await placementCandidates(context(), flagged, starter)).map((h) => h.id)).toEqual([id]);
    const production = context(PRODUCTION);
    expect(await placementCandidates(production, flagged, starter)).toEqual([]);

    await env.DB.prepare("UPDATE hosts SET unencrypted_placement_override = 1 WHERE id = ?").bind(id).run();
    expect((await placementCandidates(production, flagged, starter)).map((h) => h.id)).toEqual([id]);

    const plain = region();
    await host(plain, 4096, 2, { encrypted: false });
    expect(await placementCandidates(context(), plain, starter)).toEqual([]);
  });

  it("only an operator lets an unencrypted host take customer data, with a reason, on the record", async () => {
    const id = await host(region(), 4096, 2, { encrypted: false });
    const path = `/api/admin/hosts/${id}/unencrypted-placement`;
    await expectError(await post(path, { allow: true, reason: "staging host" }, { cookie: await logIn((await verifiedUser()).email) }), 403, "operator_only");
    const operator = await operatorCookie();
    await expectError(await post(path, { allow: true }, { cookie: operator }), 400, "validation_failed");
    const allowed = await post(path, { allow: true, reason: "staging host, no customer data expected" }, { cookie: operator });
    expect(allowed.status).toBe(200);
    expect(((await allowed.json()) as { diskEncryption: unknown }).diskEncryption).toMatchObject({ encrypted: false, operatorAllowsUnencrypted: true });
    const entry = await env.DB.prepare("SELECT actor, detail FROM audit_log WHERE action = 'host.unencrypted_placement_allowed' AND target = ?")
      .bind(id)
      .first<{ actor: string; detail: string }>();
    expect(entry!.actor).toMatch(/^user:/);
    expect(JSON.parse(entry!.detail)).toEqual({ reason: "staging host, no customer data expected" });

    expect((await post(path, { allow: false, reason: "back to normal" }, { cookie: operator })).status).toBe(200);
    expect(
      await placementCandidates(
        context(PRODUCTION),
        (await env.DB.prepare("SELECT region FROM hosts WHERE id = ?").bind(id).first<{ region: string }>())!.region,
        starter,
      ),
    ).toEqual([]);
  });

  it("places nothing on a host the operator set draining or out of service, and records who changed it", async () => {
    const drained = region();
    const id = await host(drained, 4096, 2);
    const path = `/api/admin/hosts/${id}/state`;
    await expectError(await post(path, { state: "draining" }, { cookie: await logIn((await verifiedUser()).email) }), 403, "operator_only");
    const operator = await operatorCookie();
    await expectError(await post(path, { state: "closed" }, { cookie: operator }), 400, "validation_failed");

    for (const state of ["draining", "out_of_service"]) {
      const changed = await post(path, { state, reason: "kernel upgrade" }, { cookie: operator });
      expect(changed.status).toBe(200);
      expect(((await changed.json()) as { state: string }).state).toBe(state);
      expect(await placementCandidates(context(), drained, starter)).toEqual([]);
    }
    const entries = await env.DB.prepare("SELECT actor, detail FROM audit_log WHERE action = 'host.state_changed' AND target = ? ORDER BY id")
      .bind(id)
      .all<{ actor: string; detail: string }>();
    expect(entries.results.map((entry) => JSON.parse(entry.detail))).toEqual([
      { from: "active", to: "draining", reason: "kernel upgrade" },
      { from: "draining", to: "out_of_service", reason: "kernel upgrade" },
    ]);
    expect(entries.results.every((entry) => entry.actor.startsWith("user:"))).toBe(true);

    expect((await post(path, { state: "active" }, { cookie: operator })).status).toBe(200);
    expect((await placementCandidates(context(), drained, starter)).map((h) => h.id)).toEqual([id]);
  });

  it("refuses a placement in the statement itself when the host stopped taking them after it was chosen", async () => {
    const id = await host(region(), 4096, 2);
    const takes = async () =>
      (
        await context()
          .db.select({ id: hosts.id })
          .from(hosts)
          .where(and(eq(hosts.id, id), takesPlacementsSql(id)))
      ).length === 1;
    expect(await takes()).toBe(true);
    await env.DB.prepare("UPDATE hosts SET state = 'draining' WHERE id = ?").bind(id).run();
    expect(await takes()).toBe(false);
  });
});
