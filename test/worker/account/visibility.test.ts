import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { whatWeCanSee } from "../../../worker/account/visibility";
import { workContext } from "../../../worker/context";
import { signUp } from "../helpers";
import { runningServer, serverView } from "../servers/server-helpers";
import { reportUsage, rowCount } from "./account-helpers";

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const userIdOf = async (email: string) => (await env.DB.prepare("SELECT id FROM users WHERE email = ?").bind(email).first<{ id: string }>())!.id;

describe("whatWeCanSee (the account page's 'what we can see')", () => {
  it("shows each category of the security page with this customer's own data", async () => {
    const { agent, owner, id } = await runningServer();
    const at = Date.now() - 30_000;
    reportUsage(agent, id, at, 40);
    await vi.waitFor(async () => expect(await rowCount("SELECT 1 FROM workload_usage WHERE workload_id = ?", id)).toBe(1));
    const userId = await userIdOf(owner.email);
    const view = await serverView(owner.cookie, id);

    const seen = await whatWeCanSee(workContext(env, new Date()), userId);
    expect(seen.account).toMatchObject({ email: owner.email, emailVerified: true, activeSessions: 1 });
    expect(seen.billing).toMatchObject({ subscriptionStatus: "active", plan: "starter" });
    expect(seen.billing.invoiceCount).toBe(await rowCount("SELECT 1 FROM invoices WHERE user_id = ?", userId));
    expect(seen.billing.invoices).toHaveLength(seen.billing.invoiceCount);
    expect(seen.usage).toEqual([
      {
        serverId: id,
        serverName: view.serverName,
        sampleCount: 1,
        latest: { at: new Date(at).toISOString(), cpuPercent: 40, memoryBytes: 4e8, networkRxBytes: 20, networkTxBytes: 40 },
      },
    ]);
    expect(seen.matrixMetadata).toEqual([
      {
        serverId: id,
        name: view.name,
        serverName: view.serverName,
        region: "us-east",
        status: "running",
        synapseVersion: "1.163.2",
        adminUserId: `@admin:${view.serverName}`,
        createdAt: view.createdAt,
      },
    ]);
    expect(seen.cannotSee).toBe("We cannot see the contents of end-to-end-encrypted rooms.");
  });

  it("shows an account without billing or homeservers as empty categories", async () => {
    const { email } = await signUp();
    const seen = await whatWeCanSee(workContext(env, new Date()), await userIdOf(email));
    expect(seen).toMatchObject({
      account: { email, emailVerified: false, activeSessions: 0 },
      billing: { subscriptionStatus: "none", plan: null, invoiceCount: 0, invoices: [] },
      usage: [],
      matrixMetadata: [],
    });
  });
});
