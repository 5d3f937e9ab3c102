import { env } from "cloudflare:workers";
import { and, eq } from "drizzle-orm";
import { describe, expect, it, vi } from "vitest";
import { planById } from "../../../worker/billing/plans";
import { workContext } from "../../../worker/context";
import { hosts } from "../../../worker/db/schema";
import { reviewAllHosts, reviewTightness } from "../../../worker/fleet/tight-hosts";
import { HOST_RESERVED_MEMORY_MIB, MEMORY_HEADROOM_MIB, MEMORY_OVERCOMMIT, TIGHT_AVAILABLE_SHARE } from "../../../worker/servers/admission";
import { hasRoomSql, placementCandidates } from "../../../worker/servers/placement";
import { HOUR, verifiedUser } from "../helpers";
import { expectLabelled, page } from "../pages/page-checks";
import { auditActions, connectedAgent, enrolledHost, hostView, operatorCookie, type HostIdentity } from "./fleet-helpers";
import { sample, serverOn } from "./usage-helpers";

const MIB = 1024 * 1024;
const HOST_MIB = 8192;
const starter = planById("starter")!;
const context = () => workContext(env, new Date());

/** Whether the placing statement's condition lets `hostId` take a Starter homeserver now. */
async function hasRoom(hostId: string): Promise<boolean> {
  const ctx = context();
  const rows = await ctx.db
    .select({ id: hosts.id })
    .from(hosts)
    .where(and(eq(hosts.id, hostId), hasRoomSql(hostId, starter, ctx.now)));
  return rows.length === 1;
}

async function hostRow(host: HostIdentity) {
  return (await context().db.select().from(hosts).where(eq(hosts.id, host.hostId)))[0]!;
}

describe("a tight host", () => {
  it("reporting little memory available takes no homeservers, is audited and logged once, shown with a link to its drain, and recovers once", async () => {
    const operator = await operatorCookie();
    const host = await enrolledHost(operator);
    const agent = await connectedAgent(host);
    expect(await hasRoom(host.hostId)).toBe(true);
    expect((await placementCandidates(context(), "us-east", starter)).map((h) => h.id)).toContain(host.hostId);

    const lowMiB = Math.floor(HOST_MIB * TIGHT_AVAILABLE_SHARE) - 1;
    agent.send({ type: "usage", samples: [sample(Date.now(), [], 10, lowMiB * MIB)] });
    await vi.waitFor(async () => expect((await hostRow(host)).tightSince).not.toBeNull(), { timeout: 30_000 });
    expect(await hasRoom(host.hostId)).toBe(false);
    expect((await placementCandidates(context(), "us-east", starter)).map((h) => h.id)).not.toContain(host.hostId);

    // Reviewed again while still tight (each usage report, the hourly pass): nothing more is recorded.
    await reviewTightness(context().db, await hostRow(host), new Date());
    await reviewAllHosts(context().db, new Date());
    expect((await auditActions(host.hostId)).filter((action) => action.startsWith("host.tight"))).toEqual(["host.tight:host_memory_low"]);

    expect((await hostView(operator, host.hostId)).placement).toMatchObject({
      tight: true,
      tightSince: expect.any(String),
      memoryReportedAvailableMiB: lowMiB,
      memoryCapacityMiB: HOST_MIB - HOST_RESERVED_MEMORY_MIB,
      memoryCeilingMiB: (HOST_MIB - HOST_RESERVED_MEMORY_MIB) * MEMORY_OVERCOMMIT,
    });
    const html = await page(`/operator/hosts/${host.hostId}`, operator);
    expectLabelled(html);
    expect(html).toContain('<span class="badge bad">Tight</span>');
    expect(html).toContain(`<a href="/operator/hosts/${host.hostId}/drain">Drain ${host.name}</a>`);
    const list = await page("/operator/hosts", operator);
    expect(list.slice(list.indexOf(`>${host.name}</a>`))).toContain('<span class="badge bad">Tight</span>');

    agent.send({ type: "usage", samples: [sample(Date.now() + 1, [], 10, (HOST_MIB / 2) * MIB)] });
    await vi.waitFor(async () => expect((await hostRow(host)).tightSince).toBeNull(), { timeout: 30_000 });
    await reviewTightness(context().db, await hostRow(host), new Date());
    expect((await auditActions(host.hostId)).filter((action) => action.startsWith("host.tight"))).toEqual(["host.tight:host_memory_low", "host.tight_cleared"]);
    expect(await hasRoom(host.hostId)).toBe(true);
    expect((await hostView(operator, host.hostId)).placement).toMatchObject({ tight: false, tightSince: null });
  });

  it("whose homeservers grew beyond what it gives them turns tight, and recovers when one is gone", async () => {
    const host = await enrolledHost(await operatorCookie());
    const capacity = 1024;
    await env.DB.prepare("UPDATE hosts SET memory_mib = ? WHERE id = ?")
      .bind(HOST_RESERVED_MEMORY_MIB + capacity, host.hostId)
      .run();
    const grown = [await serverOn(host, (await verifiedUser()).email), await serverOn(host, (await verifiedUser()).email)];
    // Each admitted small, each since grown to 600 MiB: with headroom, more than the host gives.
    await env.DB.prepare("UPDATE servers SET measured_memory_mib = 600, memory_measured_since = ? WHERE host_id = ?")
      .bind(Date.now() - 2 * HOUR, host.hostId)
      .run();
    expect(2 * (600 + MEMORY_HEADROOM_MIB)).toBeGreaterThan(capacity);
    await reviewAllHosts(context().db, new Date());
    expect((await auditActions(host.hostId)).filter((action) => action.startsWith("host.tight"))).toEqual(["host.tight:homeservers_grew"]);
    expect(await hasRoom(host.hostId)).toBe(false);

    await env.DB.prepare("UPDATE servers SET status = 'deleted' WHERE id = ?").bind(grown[0]).run();
    await reviewAllHosts(context().db, new Date());
    expect((await hostRow(host)).tightSince).toBeNull();
    expect((await auditActions(host.hostId)).filter((action) => action.startsWith("host.tight"))).toEqual([
      "host.tight:homeservers_grew",
      "host.tight_cleared",
    ]);
  });
});
