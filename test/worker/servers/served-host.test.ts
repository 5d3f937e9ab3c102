import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { whatWeCanSee } from "../../../worker/account/visibility";
import { workContext } from "../../../worker/context";
import { planById } from "../../../worker/billing/plans";
import { homeserverSpec } from "../../../worker/servers/servers";
import { call, post } from "../helpers";
import { administeredServer, answered, userIdOf, type AdministeredServer } from "./administration-helpers";
import { serverView } from "./server-helpers";

// A homeserver with the customer's own domain has two names: its Matrix server name (in user ids,
// what its owner and federation know it by) and the host it is served at, <name>.<HOMESERVER_DOMAIN>
// (its DNS records, tested with the other DNS tests in dns/records.test.ts, its certificate and URL).
// Each test fails if a caller took the other one.

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const domain = () => `acme-${crypto.randomUUID().slice(0, 8)}.test`;

/** A running homeserver whose Matrix server name is the customer's own domain. */
async function customNamed(): Promise<AdministeredServer & { name: string; servedHost: string }> {
  const server = await administeredServer();
  const serverName = domain();
  await env.DB.prepare("UPDATE servers SET server_name = ? WHERE id = ?").bind(serverName, server.id).run();
  const { name } = (await env.DB.prepare("SELECT name FROM servers WHERE id = ?").bind(server.id).first<{ name: string }>())!;
  return { ...server, serverName, name, servedHost: `${name}.berth.example` };
}

describe("the Matrix server name and the served host", () => {
  it("the host is told to run it under the customer's domain, served at our name", () => {
    const { config } = workContext(env, new Date());
    const spec = homeserverSpec(config, { id: crypto.randomUUID(), name: "acme-team", serverName: "acme.test" }, planById("starter")!);
    expect(spec.serverName).toBe("acme.test");
    expect(new URL(spec.publicBaseUrl).hostname).toBe("acme-team.berth.example");
    const plain = homeserverSpec(config, { id: crypto.randomUUID(), name: "plain-team", serverName: null }, planById("starter")!);
    expect(plain.serverName).toBe("plain-team.berth.example");
    expect(new URL(plain.publicBaseUrl).hostname).toBe("plain-team.berth.example");
  });

  it("its owner sees the custom name as its server name, and our host in its URL", async () => {
    const server = await customNamed();
    const view = await serverView(server.owner.cookie, server.id);
    expect(view.serverName).toBe(server.serverName);
    expect(new URL(view.homeserverUrl).hostname).toBe(server.servedHost);
    const page = await (await call(`/servers/${server.id}/security`, { cookie: server.owner.cookie })).text();
    expect(page).toContain(`Security of ${server.serverName}`);
  });

  it("its users' ids end in the custom domain; an id under our host is another server's", async () => {
    const server = await customNamed();
    const { response } = await answered(
      server,
      post(`/api/servers/${server.id}/users`, { localpart: "alice" }, { cookie: server.owner.cookie }),
      "homeserver.users.create",
      {
        fields: { userId: `@alice:${server.serverName}` },
      },
    );
    expect(response.status).toBe(201);
    expect(((await response.json()) as { userId: string }).userId).toBe(`@alice:${server.serverName}`);
    const link = (userId: string) =>
      post(`/api/servers/${server.id}/users/${encodeURIComponent(userId)}/password-link`, undefined, { cookie: server.owner.cookie });
    expect((await link(`@alice:${server.serverName}`)).status).toBe(201);
    expect((await link(`@alice:${server.servedHost}`)).status).toBe(404);
  });

  it("its account export and what we can see name it by the custom domain, and find its certificate by our host", async () => {
    const server = await customNamed();
    const hostId = (await env.DB.prepare("SELECT host_id FROM servers WHERE id = ?").bind(server.id).first<{ host_id: string }>())!.host_id;
    await env.DB.prepare("INSERT INTO certificates (host_id, server_name, not_after, issuer, updated_at) VALUES (?, ?, ?, 'Test CA', ?)")
      .bind(hostId, server.servedHost, Date.now() + 86_400_000, Date.now())
      .run();
    const exported = (await (await call("/api/me/export", { cookie: server.owner.cookie })).json()) as {
      matrixMetadata: { servers: { serverName: string; certificate: { issuer: string } | null }[] };
    };
    expect(exported.matrixMetadata.servers).toEqual([
      expect.objectContaining({ serverName: server.serverName, certificate: expect.objectContaining({ issuer: "Test CA" }) }),
    ]);
    const seen = await whatWeCanSee(workContext(env, new Date()), await userIdOf(server.owner.email));
    expect(seen.matrixMetadata.map((entry) => entry.serverName)).toEqual([server.serverName]);
    expect(seen.usage.map((entry) => entry.serverName)).toEqual([server.serverName]);
  });
});
