// The certificates check against a real Caddy (internal CA) in front of a real homeserver: it holds for
// the homeserver's name, fails for a short-lived certificate overdue for renewal or expired, fails for a
// certificate not valid for the name (a TLS server of the test's own, its CA trusted), and could not
// check when nothing answers.
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkCertificate, OVERDUE_FRACTION } from "../../../agent/checks/certificates.ts";
import { CaddyProxy } from "../../../agent/proxy/caddy.ts";
import { join } from "node:path";
import { reservePort } from "../../ports.ts";
import { TestRun, dockerUsable, ensureImages } from "../homeserver/helpers.ts";
import { makeCertificate } from "./test-certificate.ts";
import { httpsWhenReady, internalCaProxyConfig, makeTempDir, requireCaddy, startCaddy, type CaddyProcess } from "../proxy/caddy-harness.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`certificate check tests skipped: ${unusable}`);

describe.skipIf(unusable)("the certificates check (real Caddy with its internal CA, a real homeserver)", { timeout: 180_000 }, () => {
  let temp: ReturnType<typeof makeTempDir>;
  let caddy: CaddyProcess;
  let proxy: CaddyProxy;
  let run: TestRun;
  let spec: ReturnType<TestRun["spec"]>;
  let root: string;
  let synapse: { host: string; port: number };

  beforeAll(async () => {
    requireCaddy();
    await ensureImages();
    temp = makeTempDir("berth-cert-check-");
    const adminAddress = `127.0.0.1:${await reservePort()}`;
    caddy = await startCaddy(temp.dir, adminAddress);
    proxy = new CaddyProxy({ stateDir: join(temp.dir, "state"), config: await internalCaProxyConfig(temp.dir, adminAddress) });
    await proxy.ensureBaseConfig();
    root = await proxy.internalRootCertificate();
    run = new TestRun();
    spec = run.spec("certs");
    await run.run("homeserver.provision", spec);
    synapse = { host: new URL(await run.synapseBase(spec.serverId)).hostname, port: 8008 };
    await proxy.route(spec.serverName, synapse);
    await httpsWhenReady({ port: proxy.config.httpsPort, serverName: spec.serverName, ca: root, path: "/_matrix/client/versions" });
  }, 600_000);

  afterAll(async () => {
    await caddy?.stop();
    await run?.cleanup();
    temp?.remove();
  }, 180_000);

  const at = () => ({ host: "127.0.0.1", port: proxy.config.httpsPort });

  it("holds for the homeserver's name: valid, trusted, its issuer and expiry, both Matrix endpoints answering over it", async () => {
    const outcome = await checkCertificate({ serverName: spec.serverName, proxy: at(), trustedRoots: root });
    expect(outcome.result).toBe("holds");
    const facts = Object.fromEntries(outcome.evidence.facts.map((f) => [f.label, f.value]));
    expect(facts["Valid for the name"]).toBe(`yes (${spec.serverName})`);
    expect(facts.Issuer).toMatch(/Caddy Local Authority/);
    expect(facts["Trusted chain"]).toBe("yes");
    expect(Date.parse(facts.Expires!)).toBeGreaterThan(Date.now());
    expect(facts["/_matrix/client/versions"]).toBe("answers (200)");
    expect(facts["/_matrix/federation/v1/version"]).toBe("answers (200)");
    expect(outcome.evidence.summary).toContain(spec.serverName);
  });

  it("fails when the agent does not trust the issuer (the public roots do not include Caddy's internal CA)", async () => {
    const outcome = await checkCertificate({ serverName: spec.serverName, proxy: at() });
    expect(outcome.result).toBe("fails");
    expect(outcome.evidence.summary).toMatch(/its issuer is not trusted/);
  });

  it("fails for a certificate not valid for the name, naming the cause", async () => {
    const made = makeCertificate(temp.dir, "someone-else.test");
    const server: Server = createServer({ key: made.key, cert: made.cert }, (_req, res) => res.end("{}"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const outcome = await checkCertificate({
        serverName: spec.serverName,
        proxy: { host: "127.0.0.1", port: (server.address() as AddressInfo).port },
        trustedRoots: made.ca,
      });
      expect(outcome.result).toBe("fails");
      expect(outcome.evidence.summary).toContain(`it is not valid for ${spec.serverName}`);
      expect(outcome.evidence.facts.find((f) => f.label === "Issuer")?.value).toMatch(/Berth test CA/);
      expect(outcome.evidence.facts.find((f) => f.label === "Trusted chain")?.value).toBe("yes");
    } finally {
      server.close();
    }
  });

  it("could not check when the proxy does not answer", async () => {
    const outcome = await checkCertificate({ serverName: spec.serverName, proxy: { host: "127.0.0.1", port: await reservePort() }, trustedRoots: root });
    expect(outcome.result).toBe("could_not_check");
    expect(outcome.evidence.summary).toMatch(/did not complete a TLS handshake/);
  });

  it("fails once a short-lived certificate from Caddy's internal CA has less than a sixth of its lifetime left", async () => {
    // Caddy's internal issuer with a three-minute lifetime (it backdates a minute, so shorter ones come
    // out empty). The certificate it serves is judged at moments of the test's choosing: just before
    // and just after a sixth of its lifetime is left, rather than waiting minutes for the clock.
    await caddy.admin.request("PATCH", "/config/apps/tls/automation/policies/0/issuers/0", { module: "internal", lifetime: "3m" });
    const shortName = `short.${run.prefix}.test`;
    await proxy.route(shortName, synapse);
    const first = await httpsWhenReady({ port: proxy.config.httpsPort, serverName: shortName, ca: root, path: "/_matrix/client/versions" });
    const notAfter = Date.parse(first.certificate.valid_to);
    const lifetimeMs = notAfter - Date.parse(first.certificate.valid_from);
    expect(lifetimeMs).toBeLessThanOrEqual(4 * 60_000);
    const checkAt = (now: number) => checkCertificate({ serverName: shortName, proxy: at(), trustedRoots: root, now });
    expect((await checkCertificate({ serverName: shortName, proxy: at(), trustedRoots: root })).result).toBe("holds");

    const overdueFrom = notAfter - lifetimeMs * OVERDUE_FRACTION;
    expect((await checkAt(overdueFrom - 5_000)).result).toBe("holds");
    const overdue = await checkAt(overdueFrom + 5_000);
    expect(overdue.result).toBe("fails");
    expect(overdue.evidence.summary).toMatch(/its renewal is overdue: \d+ seconds? of its \d+ minutes? lifetime left, less than a sixth/);
    const expired = await checkAt(notAfter + 1_000);
    expect(expired.result).toBe("fails");
    expect(expired.evidence.summary).toMatch(/it expired on/);
  });
});
