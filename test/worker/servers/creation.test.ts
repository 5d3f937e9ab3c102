import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { eq } from "drizzle-orm";
import { workContext } from "../../../worker/context";
import { database } from "../../../worker/db/client";
import { users } from "../../../worker/db/schema";
import type { ApiError } from "../../../worker/errors";
import { planById } from "../../../worker/billing/plans";
import { HOST_RESERVED_MEMORY_MIB, newcomerMemoryMiB } from "../../../worker/servers/admission";
import { createServer } from "../../../worker/servers/servers";
import { expectError, runCron } from "../helpers";
import { subscriber } from "../billing/stripe-helpers";
import { create, onlineHost, type ServerView } from "./server-helpers";

// What creating a homeserver promises when requests race, and after its owner is long gone.

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

async function codes(responses: Response[]): Promise<(number | string)[]> {
  return Promise.all(responses.map(async (response) => (response.status === 201 ? 201 : ((await response.json()) as { error: { code: string } }).error.code)));
}

describe("concurrent creates", () => {
  it("one subscription makes one homeserver, however many creates race", async () => {
    await onlineHost();
    const { email } = await subscriber();
    const db = database(env.DB);
    const [user] = await db.select().from(users).where(eq(users.email, email));
    // Straight to the service: over HTTP the runtime happens to let the first request of an account run ahead.
    const attempts = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) => createServer(workContext(env, new Date()), user!, `race-${i}-${crypto.randomUUID().slice(0, 6)}`, "us-east")),
    );
    expect(attempts.filter((attempt) => attempt.status === "fulfilled")).toHaveLength(1);
    const refusals = attempts.flatMap((attempt) => (attempt.status === "rejected" ? [(attempt.reason as ApiError).code] : []));
    expect(refusals).toEqual(Array(5).fill("server_limit"));
    const mine = await env.DB.prepare("SELECT count(*) AS n FROM servers WHERE user_id = ?").bind(user!.id).first<{ n: number }>();
    expect(mine!.n).toBe(1);
  });

  it("never over-commit a host's memory", async () => {
    // Room for exactly two new Starter homeservers (each counted at its plan's floor and headroom).
    const { host } = await onlineHost("us-east", HOST_RESERVED_MEMORY_MIB + 2 * newcomerMemoryMiB(planById("starter")!));
    const customers = await Promise.all(Array.from({ length: 5 }, () => subscriber()));
    const results = await codes(await Promise.all(customers.map(({ cookie }) => create(cookie))));
    expect(results.filter((code) => code === 201)).toHaveLength(2);
    expect(results.filter((code) => code !== 201)).toEqual(Array(3).fill("no_capacity"));
    const placed = await env.DB.prepare("SELECT count(*) AS n FROM servers WHERE host_id = ?").bind(host.hostId).first<{ n: number }>();
    expect(placed!.n).toBe(2);
    const workloads = await env.DB.prepare("SELECT count(*) AS n FROM workloads WHERE host_id = ?").bind(host.hostId).first<{ n: number }>();
    expect(workloads!.n).toBe(2);
  });

  it("two customers racing for one name: one gets it", async () => {
    await onlineHost();
    const name = `race-${crypto.randomUUID().slice(0, 8)}`;
    const [alice, bob] = await Promise.all([subscriber(), subscriber()]);
    const results = await codes(await Promise.all([create(alice.cookie, name), create(bob.cookie, name)]));
    expect(results.sort()).toEqual([201, "name_taken"]);
  });
});

describe("a homeserver's name is never given out again", () => {
  it("not after the server is deleted, nor after its account is purged", async () => {
    await onlineHost();
    const name = `gone-${crypto.randomUUID().slice(0, 8)}`;
    const first = (await (await create((await subscriber()).cookie, name)).json()) as ServerView;
    // Deleted, its account closed and its backups aged out: the hourly purge removes every row of it.
    await env.DB.prepare("UPDATE servers SET status = 'deleted' WHERE id = ?").bind(first.id).run();
    await env.DB.prepare("UPDATE users SET deleted_at = ? WHERE id = (SELECT user_id FROM servers WHERE id = ?)").bind(Date.now(), first.id).run();
    await expectError(await create((await subscriber()).cookie, name), 409, "name_taken");

    await runCron();
    expect(await env.DB.prepare("SELECT id FROM servers WHERE id = ?").bind(first.id).first()).toBeNull();
    await expectError(await create((await subscriber()).cookie, name), 409, "name_taken");
  });
});
