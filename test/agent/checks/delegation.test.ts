// The delegation check against a local HTTPS server standing in for the customer's domain (acme.test,
// its certificate from a test CA the check is given): right, wrong, missing, slow, oversized and
// redirecting well-knowns, and the addresses it must never fetch.
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { checkDelegation, expectedWellKnowns, isPublicAddress, standInReach, type DelegationCheckInput } from "../../../agent/checks/delegation.ts";
import { delegationCheck } from "../../../agent/handlers/checks.ts";
import { delegationOutcomeSchema } from "../../../protocol/checks.ts";
import { JOBS } from "../../../protocol/jobs.ts";
import { makeTempDir } from "../proxy/caddy-harness.ts";
import { makeCertificate } from "./test-certificate.ts";

const SERVED_HOST = "acme-hs.berth.example";
const expected = expectedWellKnowns(SERVED_HOST, 443);

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
const json =
  (document: unknown, headers: Record<string, string> = { "access-control-allow-origin": "*" }): Handler =>
  (_req, res) => {
    res.writeHead(200, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(document));
  };
const rightServer = json(expected.server);
const rightClient = json(expected.client);

describe("the delegation check (a local HTTPS stand-in for the customer's domain)", () => {
  const temp = makeTempDir("berth-delegation-");
  let standIn: Server;
  let ca: string;
  let port: number;
  let routes: Record<string, Handler>;
  let requests: string[];

  beforeAll(async () => {
    const made = makeCertificate(temp.dir, "acme.test", "www.acme.test");
    ca = made.ca;
    standIn = createServer({ key: made.key, cert: made.cert }, (req, res) => {
      requests.push(`${req.headers.host}${req.url}`);
      const handler = routes[`${req.headers.host?.split(":")[0]}${req.url}`];
      if (handler) handler(req, res);
      else res.writeHead(404).end("not found");
    });
    await new Promise<void>((resolve) => standIn.listen(0, "127.0.0.1", resolve));
    port = (standIn.address() as AddressInfo).port;
  });

  afterAll(() => {
    standIn.closeAllConnections();
    standIn.close();
    temp.remove();
  });

  beforeEach(() => {
    routes = { "acme.test/.well-known/matrix/server": rightServer, "acme.test/.well-known/matrix/client": rightClient };
    requests = [];
  });

  const check = (overrides: Partial<DelegationCheckInput> = {}) =>
    checkDelegation({
      serverName: "acme.test",
      servedHost: SERVED_HOST,
      servedPort: 443,
      domainPort: port,
      trustedRoots: ca,
      allowPrivateAddresses: true,
      resolve: async () => ["127.0.0.1"],
      timeoutMs: 1_000,
      ...overrides,
    });

  it("holds when both well-knowns are exactly the documents the dashboard shows", async () => {
    const outcome = await check();
    expect(outcome.result).toBe("holds");
    expect(outcome.evidence.facts).toEqual([
      { label: "/.well-known/matrix/server", value: "right" },
      { label: "/.well-known/matrix/client", value: "right" },
    ]);
  });

  it("the documents to publish name the served host, with its port when it is not 443", () => {
    expect(expected).toEqual({ server: { "m.server": `${SERVED_HOST}:443` }, client: { "m.homeserver": { base_url: `https://${SERVED_HOST}` } } });
    expect(expectedWellKnowns(SERVED_HOST, 8443).client["m.homeserver"].base_url).toBe(`https://${SERVED_HOST}:8443`);
  });

  it("fails for a wrong server well-known, saying what it says and what it should", async () => {
    routes["acme.test/.well-known/matrix/server"] = json({ "m.server": "matrix.acme.test:8448" });
    const outcome = await check();
    expect(outcome.result).toBe("fails");
    expect(outcome.evidence.summary).toContain(`says "m.server": "matrix.acme.test:8448", not "${SERVED_HOST}:443"`);
    expect(outcome.evidence.facts[1]).toEqual({ label: "/.well-known/matrix/client", value: "right" });
  });

  it("fails for a client well-known without the CORS header web clients need", async () => {
    routes["acme.test/.well-known/matrix/client"] = json(expected.client, {});
    const outcome = await check();
    expect(outcome.result).toBe("fails");
    expect(outcome.evidence.summary).toContain("lacks the header Access-Control-Allow-Origin: *");
  });

  it("accepts a client base_url with a trailing slash, and fails for another homeserver's", async () => {
    routes["acme.test/.well-known/matrix/client"] = json({ "m.homeserver": { base_url: `https://${SERVED_HOST}/` } });
    expect((await check()).result).toBe("holds");
    routes["acme.test/.well-known/matrix/client"] = json({ "m.homeserver": { base_url: "https://matrix.org" } });
    expect((await check()).evidence.summary).toContain(`says "m.homeserver.base_url": "https://matrix.org", not "https://${SERVED_HOST}"`);
  });

  it("fails for missing well-knowns and for ones that are not JSON objects", async () => {
    delete routes["acme.test/.well-known/matrix/server"];
    routes["acme.test/.well-known/matrix/client"] = (_req, res) => res.writeHead(200, { "access-control-allow-origin": "*" }).end("<html>hello</html>");
    const outcome = await check();
    expect(outcome.result).toBe("fails");
    expect(outcome.evidence.facts).toEqual([
      { label: "/.well-known/matrix/server", value: "answers HTTP 404" },
      { label: "/.well-known/matrix/client", value: "is not a JSON object" },
    ]);
  });

  it("quotes only the start of a long wrong value (the evidence is bounded)", async () => {
    routes["acme.test/.well-known/matrix/server"] = json({ "m.server": "x".repeat(5_000) });
    const outcome = await check();
    expect(outcome.result).toBe("fails");
    expect(delegationOutcomeSchema.safeParse(outcome).success).toBe(true);
    expect(outcome.evidence.facts[0]!.value.length).toBeLessThan(200);
  });

  it("as the host's job: the domain the control plane names, judged against the served host and port of the public base URL", async () => {
    const standIn = { domainPort: port, trustedRoots: ca, allowPrivateAddresses: true, resolve: async () => ["127.0.0.1"] };
    const payload = { serverId: "srv-1", serverName: "acme.test", publicBaseUrl: `https://${SERVED_HOST}/` };
    const right = await delegationCheck(payload, standIn);
    expect(right).toMatchObject({ serverId: "srv-1", serverName: "acme.test", outcome: { result: "holds" } });
    expect(JOBS["homeserver.delegation_check"].result.safeParse(right).success).toBe(true);
    // Served on another port, the same documents are wrong: they must name that port.
    const otherPort = await delegationCheck({ ...payload, publicBaseUrl: `https://${SERVED_HOST}:8443/` }, standIn);
    expect(otherPort.outcome.result).toBe("fails");
    expect(otherPort.outcome.evidence.summary).toContain(`not "${SERVED_HOST}:8443"`);
  });

  it("in development, the proxy's stand-in domains are reached at the proxy (its address, port and CA), and no other domain at all", async () => {
    const proxy = {
      config: { standInDomains: { "acme.test": { host: "127.0.0.1", port: 1 } }, connectHost: "127.0.0.1", httpsPort: port },
      servedCertificateRoots: async () => ca,
    };
    const payload = { serverId: "srv-1", serverName: "acme.test", publicBaseUrl: `https://${SERVED_HOST}/` };
    expect((await delegationCheck(payload, await standInReach(proxy))).outcome.result).toBe("holds");
    routes["elsewhere.test/.well-known/matrix/server"] = rightServer;
    requests = [];
    const elsewhere = await delegationCheck({ ...payload, serverName: "elsewhere.test" }, await standInReach(proxy));
    expect(elsewhere.outcome.evidence.facts).toEqual([
      { label: "/.well-known/matrix/server", value: "elsewhere.test does not resolve" },
      { label: "/.well-known/matrix/client", value: "elsewhere.test does not resolve" },
    ]);
    expect(requests).toEqual([]);
  });

  it("fails for a slow domain once its deadline passes, without waiting for it", async () => {
    routes["acme.test/.well-known/matrix/server"] = () => {};
    const started = Date.now();
    const outcome = await check({ timeoutMs: 300 });
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(outcome.evidence.facts[0]).toEqual({ label: "/.well-known/matrix/server", value: "no answer within 0.3 s" });
  });

  it("fails for a certificate it does not trust (the customer's domain needs a valid one of its own)", async () => {
    const outcome = await check({ trustedRoots: undefined });
    expect(outcome.result).toBe("fails");
    expect(outcome.evidence.facts[0]?.value).toMatch(/^could not be fetched over HTTPS \(/);
  });

  it("follows a few https redirects, each to a name it vets again", async () => {
    routes["acme.test/.well-known/matrix/server"] = (_req, res) =>
      res.writeHead(301, { location: `https://www.acme.test:${port}/.well-known/matrix/server` }).end();
    routes["www.acme.test/.well-known/matrix/server"] = rightServer;
    expect((await check()).result).toBe("holds");
    expect(requests).toContain(`www.acme.test:${port}/.well-known/matrix/server`);
  });

  describe("misuse: bounded size, redirects and addresses", () => {
    it("stops reading an oversized response", async () => {
      routes["acme.test/.well-known/matrix/server"] = (_req, res) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(`{"m.server": "${"x".repeat(1024 * 1024)}"}`);
      };
      expect((await check()).evidence.facts[0]).toEqual({ label: "/.well-known/matrix/server", value: "the response is larger than 64 KiB" });
    });

    it("refuses a redirect loop after three redirects", async () => {
      routes["acme.test/.well-known/matrix/server"] = (_req, res) => res.writeHead(302, { location: "/.well-known/matrix/server" }).end();
      expect((await check()).evidence.facts[0]).toEqual({ label: "/.well-known/matrix/server", value: "more than 3 redirects" });
      expect(requests.filter((request) => request.endsWith("/server"))).toHaveLength(4);
    });

    it("refuses a redirect away from https", async () => {
      routes["acme.test/.well-known/matrix/server"] = (_req, res) => res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data" }).end();
      expect((await check()).evidence.facts[0]).toEqual({ label: "/.well-known/matrix/server", value: "redirects to a URL that is not https" });
    });

    it("never connects to a domain that resolves to a private or loopback address (production)", async () => {
      for (const addresses of [["127.0.0.1"], ["93.184.216.34", "10.0.0.7"], ["::ffff:169.254.169.254"]]) {
        const outcome = await check({ allowPrivateAddresses: false, resolve: async () => addresses });
        expect(outcome.result).toBe("fails");
        expect(outcome.evidence.facts[0]?.value).toBe("acme.test resolves to a private or reserved address, which is never fetched");
      }
      expect(requests).toEqual([]);
    });

    it.each([
      ["127.0.0.1", false],
      ["10.0.0.1", false],
      ["172.17.0.1", false],
      ["192.168.1.1", false],
      ["100.64.0.1", false],
      ["169.254.169.254", false],
      ["0.0.0.0", false],
      ["::1", false],
      ["::", false],
      ["fd00::1", false],
      ["fe80::1", false],
      ["::ffff:127.0.0.1", false],
      ["not-an-address", false],
      ["93.184.216.34", true],
      ["2606:4700:4700::1111", true],
    ])("isPublicAddress(%s) is %s", (address, expectedResult) => {
      expect(isPublicAddress(address)).toBe(expectedResult);
    });
  });
});
