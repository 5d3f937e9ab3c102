import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { sqliteTable, text } from "drizzle-orm/sqlite-core";
import { describe, expect, it } from "vitest";
import { softwareVerdict, SYNAPSE_SECURITY_FIXES } from "../../../worker/checks/software";
import { backupsVerdict, cardDataColumns, cardDataVerdict } from "../../../worker/checks/verdicts";
import { database } from "../../../worker/db/client";
import * as schema from "../../../worker/db/schema";
import { DAY, HOUR } from "../helpers";
import { runningServer } from "../servers/server-helpers";

// The verdicts the Worker reaches itself: backups from D1's backups, card data from what the
// account holds and what our tables could hold, software from the version the host reports.

const db = database(env.DB);

async function serverRow(id: string) {
  const [server] = await db.select().from(schema.servers).where(eq(schema.servers.id, id));
  return server!;
}

async function backupAt(serverId: string, hostId: string, createdAt: number, status = "succeeded") {
  await env.DB.prepare(
    `INSERT INTO backups (id, server_id, host_id, trigger, status, r2_key, upload_id, part_size, job_id, created_at, completed_at)
     VALUES (?, ?, ?, 'scheduled', ?, 'k', 'upload', 8388608, ?, ?, ?)`,
  )
    .bind(crypto.randomUUID(), serverId, hostId, status, crypto.randomUUID(), createdAt, createdAt + 10 * 60_000)
    .run();
}

describe("the backups check", () => {
  it("is not checked on a homeserver younger than 26 hours with no backup yet, saying when the first is taken", async () => {
    const { id } = await runningServer();
    const server = await serverRow(id);
    const verdict = await backupsVerdict(db, server, new Date(server.createdAt.getTime() + 2 * HOUR));
    expect(verdict.result).toBe("could_not_check");
    expect(verdict.evidence.summary).toMatch(/^No backup yet; the first is taken on \d{4}-\d\d-\d\d \d\d:00 UTC\.$/);

    const later = await backupsVerdict(db, server, new Date(server.createdAt.getTime() + 27 * HOUR));
    expect(later.result).toBe("fails");
    expect(later.evidence.summary).toBe("No backup has succeeded in the 27 hours since the homeserver was made.");
  });

  it("holds with a successful backup under 26 hours old, and fails naming its age once it is older; a failed backup counts for nothing", async () => {
    const { id, host } = await runningServer();
    const server = await serverRow(id);
    const now = Date.now();
    await backupAt(id, host.hostId, now - 20 * HOUR);
    await backupAt(id, host.hostId, now - HOUR, "failed");
    const holds = await backupsVerdict(db, server, new Date(now));
    expect(holds.result).toBe("holds");
    expect(holds.evidence.facts).toContainEqual({ label: "Backups kept", value: "1" });

    const stale = await backupsVerdict(db, server, new Date(now + 10 * HOUR));
    expect(stale.result).toBe("fails");
    expect(stale.evidence.summary).toBe("The last successful backup is 29 hours old: a daily backup was missed.");
  });

  it("fails when a backup older than 30 days is still kept", async () => {
    const { id, host } = await runningServer();
    const server = await serverRow(id);
    const now = Date.now();
    await backupAt(id, host.hostId, now - 32 * DAY);
    await backupAt(id, host.hostId, now - 2 * HOUR);
    const verdict = await backupsVerdict(db, server, new Date(now));
    expect(verdict.result).toBe("fails");
    expect(verdict.evidence.summary).toBe("The oldest backup kept is 32 days old: we keep them 30 days.");
  });
});

describe("the card-data check", () => {
  it("finds no table of ours with a place for a card number, brand, last four digits or expiry (this fails when someone adds one)", () => {
    expect(cardDataColumns()).toEqual([]);
  });

  it("would find such a column in any table, by its name", () => {
    const invoicesWithCards = sqliteTable("invoices", { id: text("id"), cardLast4: text("card_last4"), expMonth: text("exp_month") });
    const paymentMethods = sqliteTable("payment_methods", { brand: text("brand"), expiresAt: text("expires_at") });
    expect(cardDataColumns([invoicesWithCards, paymentMethods, "not a table"])).toEqual(["invoices.card_last4", "invoices.exp_month", "payment_methods.brand"]);
  });

  it("holds, listing what the account does hold: Stripe's customer and subscription ids and the number of invoices", async () => {
    const { owner } = await runningServer();
    const [user] = await db.select().from(schema.users).where(eq(schema.users.email, owner.email));
    const verdict = await cardDataVerdict(db, user!.id);
    expect(verdict.result).toBe("holds");
    expect(verdict.evidence.facts).toContainEqual({ label: "Stripe customer id", value: owner.customerId });
    expect(verdict.evidence.facts).toContainEqual({ label: "Stripe subscription ids", value: owner.subscriptionId });
    expect(verdict.evidence.facts.find((fact) => fact.label.startsWith("Invoices"))!.value).toMatch(/^[1-9]\d*$/);
  });
});

describe("the software check", () => {
  const SHIPPED = "matrixdotorg/synapse:v1.163.2";
  const running = (version: string) => ({ version, image: `matrixdotorg/synapse:v${version}` });

  it("holds for the release we ship, or a newer one", () => {
    expect(softwareVerdict(running("1.163.2"), SHIPPED)).toMatchObject({
      result: "holds",
      evidence: { summary: "Synapse 1.163.2 is the newest release we ship." },
    });
    expect(softwareVerdict(running("1.164.0"), SHIPPED).result).toBe("holds");
  });

  it("fails for an older release missing a security fix, naming the newest fix it misses", () => {
    const verdict = softwareVerdict(running("1.120.0"), SHIPPED);
    expect(verdict.result).toBe("fails");
    expect(verdict.evidence.summary).toBe("Synapse 1.120.0 is older than 1.139.1, which fixed a security problem; the update to 1.163.2 is due.");
    expect(verdict.evidence.facts).toContainEqual({ label: "Fixed in 1.139.1", value: SYNAPSE_SECURITY_FIXES.find((fix) => fix.version === "1.139.1")!.fixes });
  });

  it("holds for an older release past every known security fix, saying an update is available", () => {
    const verdict = softwareVerdict(running("1.150.0"), SHIPPED);
    expect(verdict).toMatchObject({
      result: "holds",
      evidence: { summary: "Synapse 1.150.0 has every security fix we know of; an update to 1.163.2 is available." },
    });
  });

  it("is not checked when the version cannot be read or was not reported", () => {
    expect(softwareVerdict({ version: "unknown", image: SHIPPED }, SHIPPED).result).toBe("could_not_check");
    expect(softwareVerdict(undefined, SHIPPED).result).toBe("could_not_check");
  });

  it("with an image that pins no version (development), holds only for that very image", () => {
    expect(softwareVerdict({ version: "1.163.2", image: "berth/synapse:latest" }, "berth/synapse:latest").result).toBe("holds");
    expect(softwareVerdict({ version: "1.90.0", image: "someone/else:latest" }, "berth/synapse:latest").result).toBe("could_not_check");
  });
});
