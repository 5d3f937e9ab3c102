import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { customServerNameProblem } from "../../../worker/servers/names";
import { subscriber } from "../billing/stripe-helpers";
import { create, onlineHost, type ServerView } from "./server-helpers";

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
