import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { customServerNameProblem } from "../../../worker/servers/names";
import { subscriber } from "../billing/stripe-helpers";
import { call, expectError, post } from "../helpers";
import { create, onlineHost, type ServerView } from "./server-helpers";

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const uniqueDomain = () => `acme-${crypto.randomUUID().slice(0, 8)}.test`;
const createNamed = (cookie: string, serverName: unknown, name = `hs-${crypto.randomUUID().slice(0, 8)}`) =>
  post("/api/servers", { name, region: "us-east", serverName }, { cookie });
const serversOf = async (cookie: string) => ((await (await call("/api/servers", { cookie })).json()) as { servers: ServerView[] }).servers;

const development = { homeserverDomain: "berth.example", production: false };
const production = { homeserverDomain: "berth.chat", production: true };

describe("a customer's own domain as the Matrix server name", () => {
  it.each(["acme.com", "chat.acme.co.uk", "a-1.example-corp.io", "acme.test"])("%s is accepted in development", (domain) => {
    expect(customServerNameProblem(domain, development)).toBeNull();
  });

  it("a .test name, which only the tests' stand-ins use, is refused in production", () => {
    expect(customServerNameProblem("acme.test", production)).toBe("must be a public domain name");
    expect(customServerNameProblem("acme.com", production)).toBeNull();
  });
});

describe("misuse: names that are not the customer's public domain are refused", () => {
  it.each([
    ["berth.chat", "must be your own domain, not berth.chat or a name under it"],
    ["alice.berth.chat", "must be your own domain, not berth.chat or a name under it"],
    ["x.alice.berth.chat", "must be your own domain, not berth.chat or a name under it"],
  ])("our own domain or a name under it: %s", (domain, problem) => {
    expect(customServerNameProblem(domain, production)).toBe(problem);
  });

  it("our domain is compared whatever its case in the settings", () => {
    expect(customServerNameProblem("alice.berth.chat", { homeserverDomain: "Berth.Chat", production: true })).not.toBeNull();
  });

  it.each(["localhost", "acme.localhost", "db.internal", "printer.local", "host.lan", "x.home.arpa", "abc.onion", "acme.invalid", "acme.example"])(
    "an internal or special-use name: %s",
    (domain) => {
      expect(customServerNameProblem(domain, production)).not.toBeNull();
    },
  );

  it.each([
    ["127.0.0.1", "must be a domain name, not an IP address"],
    ["10.0.0.5", "must be a domain name, not an IP address"],
    ["169.254.169.254", "must be a domain name, not an IP address"],
    ["0x7f.1", "must be a domain name, not an IP address"],
    ["[::1]", "may contain only lower-case letters a–z, digits, hyphens and dots (no port, no scheme)"],
    ["::1", "may contain only lower-case letters a–z, digits, hyphens and dots (no port, no scheme)"],
  ])("an IP literal: %s", (domain, problem) => {
    expect(customServerNameProblem(domain, production)).toBe(problem);
  });

  it.each([
    ["acme", "must be a domain name with at least two labels, such as example.com"],
    ["Acme.com", "may contain only lower-case letters a–z, digits, hyphens and dots (no port, no scheme)"],
    ["acme.com:8448", "may contain only lower-case letters a–z, digits, hyphens and dots (no port, no scheme)"],
    ["https://acme.com", "may contain only lower-case letters a–z, digits, hyphens and dots (no port, no scheme)"],
    ["acme.com.", "each label must be 1 to 63 characters"],
    ["acme..com", "each label must be 1 to 63 characters"],
    [`${"a".repeat(64)}.com`, "each label must be 1 to 63 characters"],
    ["-acme.com", "no label may start or end with a hyphen"],
    ["", "must be 1 to 253 characters"],
    [`${"a.".repeat(127)}com`, "must be 1 to 253 characters"],
  ])("a malformed name: %j", (domain, problem) => {
    expect(customServerNameProblem(domain, production)).toBe(problem);
  });
});

describe("misuse: one domain, one homeserver", () => {
  it("a second homeserver can never hold a domain another one holds", async () => {
    await onlineHost();
    const servers: string[] = [];
    for (let i = 0; i < 2; i++) {
      const { cookie } = await subscriber();
      servers.push(((await (await create(cookie)).json()) as ServerView).id);
    }
    const claim = (id: string) => env.DB.prepare("UPDATE servers SET server_name = 'acme.com' WHERE id = ?").bind(id).run();
    await claim(servers[0] as string);
    await expect(claim(servers[1] as string)).rejects.toThrow(/UNIQUE constraint failed: servers.server_name/);
  });
});

describe("creating a homeserver with the customer's own domain", () => {
  it("takes the domain as its Matrix server name and is still served at our host", async () => {
    await onlineHost();
    const { cookie } = await subscriber();
    const serverName = uniqueDomain();
    const response = await createNamed(cookie, serverName, `acme-team-${serverName.slice(5, 13)}`);
    expect(response.status).toBe(201);
    const view = (await response.json()) as ServerView;
    expect(view.serverName).toBe(serverName);
    expect(view.homeserverUrl).toBe(`https://${view.name}.berth.example`);
  });

  it("answers the documents to publish on the domain, with the header the client one needs", async () => {
    await onlineHost();
    const { cookie } = await subscriber();
    const serverName = uniqueDomain();
    const view = (await (await createNamed(cookie, serverName)).json()) as ServerView;
    const response = await call(`/api/servers/${view.id}/delegation`, { cookie });
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      serverName,
      wellKnown: {
        server: {
          url: `https://${serverName}/.well-known/matrix/server`,
          document: { "m.server": `${view.name}.berth.example:443` },
          headers: { "Content-Type": "application/json" },
        },
        client: {
          url: `https://${serverName}/.well-known/matrix/client`,
          document: { "m.homeserver": { base_url: `https://${view.name}.berth.example` } },
          headers: { "Content-Type": "application/json", "Access-Control-Allow-Origin": "*" },
        },
      },
    });
  });

  it("stores the domain in its canonical form: lower case, without the root's trailing dot", async () => {
    await onlineHost();
    const { cookie } = await subscriber();
    const serverName = uniqueDomain();
    const view = (await (await createNamed(cookie, `${serverName.toUpperCase()}.`)).json()) as ServerView;
    expect(view.serverName).toBe(serverName);
  });
});

describe("misuse: the delegation route", () => {
  it("is the owner's only: another customer gets the same 404 as for an id of nothing; without a session, 401", async () => {
    await onlineHost();
    const owner = await subscriber();
    const view = (await (await createNamed(owner.cookie, uniqueDomain())).json()) as ServerView;
    const other = await subscriber();
    const theirs = await call(`/api/servers/${view.id}/delegation`, { cookie: other.cookie });
    const nothing = await call(`/api/servers/${crypto.randomUUID()}/delegation`, { cookie: other.cookie });
    expect(theirs.status).toBe(404);
    expect(await theirs.json()).toEqual(await nothing.json());
    await expectError(await call(`/api/servers/${view.id}/delegation`), 401);
  });

  it("has nothing to show for a homeserver named under our domain", async () => {
    await onlineHost();
    const { cookie } = await subscriber();
    const view = (await (await create(cookie)).json()) as ServerView;
    await expectError(await call(`/api/servers/${view.id}/delegation`, { cookie }), 404, "not_found");
  });
});

describe("misuse: domains the API refuses, leaving nothing made", () => {
  it.each([
    ["our own domain", "berth.example"],
    ["a name under our domain", "alice.berth.example"],
    ["our domain in capitals with the root's dot", "ALICE.Berth.Example."],
    ["an IPv4 literal", "10.0.0.5"],
    ["the metadata address", "169.254.169.254"],
    ["an IPv6 literal", "[::1]"],
    ["an internal name", "db.internal"],
    ["a single label", "localhost"],
    ["a port", "acme.com:8448"],
    ["a URL", "https://acme.com"],
    ["two trailing dots", "acme.com.."],
    ["not a string", 42],
  ])("%s (400, in the error shape)", async (_what, serverName) => {
    await onlineHost();
    const { cookie } = await subscriber();
    const response = await createNamed(cookie, serverName);
    const message = ((await response.clone().json()) as { error: { message: string } }).error.message;
    await expectError(response, 400, "validation_failed");
    expect(message).toMatch(/^serverName: /);
    expect(await serversOf(cookie)).toEqual([]);
  });

  it("a domain another homeserver holds: 409, not saying whose, whatever its case or trailing dot", async () => {
    await onlineHost();
    const alice = await subscriber();
    const serverName = uniqueDomain();
    const held = (await (await createNamed(alice.cookie, serverName)).json()) as ServerView;
    for (const variant of [serverName, serverName.toUpperCase(), `${serverName}.`]) {
      const bob = await subscriber();
      const response = await createNamed(bob.cookie, variant);
      const text = await response.clone().text();
      await expectError(response, 409, "server_name_taken");
      for (const secret of [alice.email, held.id, held.name]) expect(text).not.toContain(secret);
      expect(await serversOf(bob.cookie)).toEqual([]);
    }
  });

  it("two customers racing for one domain: one gets it", async () => {
    await onlineHost();
    const serverName = uniqueDomain();
    const [alice, bob] = await Promise.all([subscriber(), subscriber()]);
    const responses = await Promise.all([createNamed(alice.cookie, serverName), createNamed(bob.cookie, serverName)]);
    const codes = await Promise.all(
      responses.map(async (response) => (response.status === 201 ? 201 : ((await response.json()) as { error: { code: string } }).error.code)),
    );
    expect(codes.sort()).toEqual([201, "server_name_taken"]);
  });
});
