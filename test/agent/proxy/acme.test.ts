// Production's certificate path, against a real ACME server: Pebble (Let's Encrypt's test server)
// validates a new homeserver's name by connecting to the Caddy the agent configured (DNS from
// pebble-challtestsrv sends every name to 127.0.0.1), issues it a certificate, and, with lifetimes
// of a minute, Caddy renews it before it expires. Caddy runs the config CaddyProxy builds with
// tls "acme": only the directory, the root its HTTPS is trusted against and the renewal check
// interval differ from production's.
import { X509Certificate } from "node:crypto";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkCertificate } from "../../../agent/checks/certificates.ts";
import { silentLogger } from "../../../agent/log.ts";
import { CaddyProxy } from "../../../agent/proxy/caddy.ts";
import { reservePortPair, reservePort } from "../../ports.ts";
import { https, httpsWhenReady, makeTempDir, requireCaddy, startCaddy, startUpstream, type CaddyProcess, type Upstream } from "./caddy-harness.ts";
import { eventually, requirePebble, startPebble, type Pebble } from "./pebble-harness.ts";

/** Caddy renews in the last third of a lifetime: 40 s after issuance, 20 s before expiry. */
const VALIDITY_SECONDS = 60;
const SERVER_NAME = "alice.berth-acme.test";

let temp: ReturnType<typeof makeTempDir>;
let pebble: Pebble | undefined;
let caddy: CaddyProcess | undefined;
let upstream: Upstream | undefined;
let proxy: CaddyProxy;
let httpsPort: number;
let first: X509Certificate;

/** The certificate Caddy serves for SERVER_NAME, with the request answered through it, trusting only Pebble's root. */
async function served(): Promise<{ certificate: X509Certificate; body: unknown }> {
  const response = await https({ port: httpsPort, serverName: SERVER_NAME, ca: pebble!.root, path: "/_matrix/client/versions" });
  return { certificate: new X509Certificate(response.certificate.raw), body: response.json() };
}

beforeAll(async () => {
  requireCaddy();
  const files = requirePebble();
  temp = makeTempDir("berth-acme-test-");
  const adminAddress = `127.0.0.1:${await reservePort()}`;
  // Caddy's HTTPS port and, one above, its HTTP port: where Pebble validates tls-alpn-01 and http-01.
  httpsPort = await reservePortPair();
  const httpPort = httpsPort + 1;
  pebble = await startPebble(temp.dir, { httpPort, tlsPort: httpsPort, validitySeconds: VALIDITY_SECONDS });
  caddy = await startCaddy(temp.dir, adminAddress);
  upstream = await startUpstream("synapse");
  proxy = new CaddyProxy({
    stateDir: join(temp.dir, "state"),
    log: silentLogger,
    config: {
      adminAddress,
      tls: "acme",
      acmeEmail: "ops@example.org",
      acmeCa: pebble.directoryUrl,
      acmeCaRootsFile: files.minicaRoot,
      renewCheckIntervalSeconds: 1,
      httpsPort,
      httpPort,
      listenHost: "127.0.0.1",
      storageDir: join(temp.dir, "storage"),
    },
  });
}, 60_000);

afterAll(async () => {
  await caddy?.stop();
  await pebble?.stop();
  await upstream?.close();
  temp?.remove();
});

describe("certificates from an ACME server (Pebble)", () => {
  it("a new homeserver's route gets a certificate issued through ACME by the configured CA", async () => {
    await proxy.ensureBaseConfig();
    await proxy.route(SERVER_NAME, { host: "127.0.0.1", port: upstream!.port });

    // Pebble issues only after validating the name against this Caddy (no PEBBLE_VA_ALWAYS_VALID).
    const response = await httpsWhenReady({ port: httpsPort, serverName: SERVER_NAME, ca: pebble!.root, path: "/_matrix/client/versions" }, 45_000).catch(
      (error: unknown) => {
        throw new Error(`${String(error)}\n${caddy!.logs()}\n${pebble!.logs()}`);
      },
    );
    expect(response.status).toBe(200);
    expect(response.json()).toMatchObject({ upstream: "synapse", url: "/_matrix/client/versions" });

    first = new X509Certificate(response.certificate.raw);
    const intermediate = new X509Certificate(pebble!.intermediate);
    expect(first.checkIssued(intermediate)).toBe(true);
    expect(first.verify(intermediate.publicKey)).toBe(true);
    expect(first.issuer).toBe(intermediate.subject);
    expect(first.subjectAltName).toBe(`DNS:${SERVER_NAME}`);
    expect(first.checkHost(SERVER_NAME)).toBe(SERVER_NAME);
    const lifetimeMs = Date.parse(first.validTo) - Date.parse(first.validFrom);
    expect(lifetimeMs).toBeGreaterThanOrEqual((VALIDITY_SECONDS - 2) * 1000);
    expect(lifetimeMs).toBeLessThanOrEqual(VALIDITY_SECONDS * 1000);

    // The agent's own certificate check sees the same certificate: Pebble's intermediate, its expiry.
    // With tls "acme" it verifies against the system's roots, as production's Let's Encrypt chains
    // do; Pebble's root is not among them, which the check says.
    const [check] = await proxy.checkCertificates();
    expect(check?.report).toMatchObject({ serverName: SERVER_NAME, notAfter: Date.parse(first.validTo), notBefore: Date.parse(first.validFrom) });
    expect(check?.report?.issuer).toMatch(/^Pebble Intermediate CA [0-9a-f]+ \(untrusted: UNABLE_TO_GET_ISSUER_CERT_LOCALLY\)$/);
    expect(intermediate.subject).toContain(check!.report!.issuer.split(" (")[0]);
    expect(check).toMatchObject({ trusted: false, error: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" });

    // The certificates promise check, trusting Pebble's root as production trusts Let's Encrypt's:
    // it holds, naming the issuer and the expiry, the endpoints answering over the certificate.
    const promise = await checkCertificate({ serverName: SERVER_NAME, proxy: { host: "127.0.0.1", port: httpsPort }, trustedRoots: pebble!.root });
    expect(promise.result, promise.evidence.summary).toBe("holds");
    expect(promise.evidence.facts).toEqual(
      expect.arrayContaining([
        { label: "Issuer", value: expect.stringMatching(/^Pebble Intermediate CA [0-9a-f]+$/) },
        { label: "Expires", value: new Date(Date.parse(first.validTo)).toISOString() },
        { label: "/_matrix/federation/v1/version", value: "answers (200)" },
      ]),
    );
    // Against the public roots alone Pebble's chain is not trusted, and the check fails saying so.
    const untrusted = await checkCertificate({ serverName: SERVER_NAME, proxy: { host: "127.0.0.1", port: httpsPort } });
    expect(untrusted.result).toBe("fails");
    expect(untrusted.evidence.summary).toContain("its issuer is not trusted (UNABLE_TO_GET_ISSUER_CERT_LOCALLY)");
  });

  it(
    "Caddy renews the certificate before it expires: a new serial, a later expiry, the old one still valid when replaced",
    async () => {
      const renewed = await eventually(
        "Caddy to serve a renewed certificate",
        async () => {
          const { certificate } = await served();
          return certificate.serialNumber === first.serialNumber ? undefined : certificate;
        },
        VALIDITY_SECONDS * 1000,
        250,
      ).catch((error: unknown) => {
        throw new Error(`${String(error)}\n${caddy!.logs()}\n${pebble!.logs()}`);
      });

      expect(renewed.serialNumber).not.toBe(first.serialNumber);
      expect(Date.parse(renewed.validTo)).toBeGreaterThan(Date.parse(first.validTo));
      // Issued while the first was still valid: renewal ahead of expiry, not recovery after it.
      expect(Date.parse(renewed.validFrom)).toBeLessThan(Date.parse(first.validTo));
      expect(renewed.checkIssued(new X509Certificate(pebble!.intermediate))).toBe(true);
      expect(renewed.checkHost(SERVER_NAME)).toBe(SERVER_NAME);
      // Still the homeserver behind it.
      expect((await served()).body).toMatchObject({ upstream: "synapse" });

      const [check] = await proxy.checkCertificates();
      expect(check?.report?.notAfter).toBeGreaterThanOrEqual(Date.parse(renewed.validTo));
      const promise = await checkCertificate({ serverName: SERVER_NAME, proxy: { host: "127.0.0.1", port: httpsPort }, trustedRoots: pebble!.root });
      const expires = promise.evidence.facts.find((fact) => fact.label === "Expires")!.value;
      expect(Date.parse(expires)).toBeGreaterThanOrEqual(Date.parse(renewed.validTo));
    },
    (VALIDITY_SECONDS + 30) * 1000,
  );
});
