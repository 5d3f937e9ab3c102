// Pebble, Let's Encrypt's ACME test server, for the certificate tests: pebble-challtestsrv answers
// Pebble's DNS queries (every name → 127.0.0.1), and Pebble validates challenges on the ports the
// test's Caddy listens on, then issues from a root and intermediate it generates at start.
//
// `node scripts/setup.mjs --for-tests` (.ci/run) builds both programs with Go into pebbleDir().
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { get } from "node:https";
import { connect } from "node:net";
import { join } from "node:path";
import { PEBBLE_VERSION, pebbleFiles, type PebbleFiles } from "../../../scripts/setup.mjs";
import { reservePort } from "../../ports.ts";
import { spawnLogged, type LoggedProcess } from "./caddy-harness.ts";

export function requirePebble(): PebbleFiles {
  const files = pebbleFiles();
  const absent = Object.values(files).filter((file) => !existsSync(file));
  if (absent.length > 0) {
    throw new Error(
      `the ACME tests need Pebble ${PEBBLE_VERSION}, built by \`node scripts/setup.mjs --for-tests\` (.ci/run runs it); absent: ${absent.join(", ")}`,
    );
  }
  return files;
}

/** Calls `probe` until it returns a value, every `intervalMs`, failing after `timeoutMs` with its last error. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export interface Pebble {
  /** The ACME directory URL (HTTPS, under Pebble's minica-signed certificate). */
  directoryUrl: string;
  /** The root Pebble issues under (generated at start), PEM. */
  root: string;
  /** The intermediate that signs the certificates Pebble issues, PEM. */
  intermediate: string;
  processes: LoggedProcess[];
  logs(): string;
  stop(): Promise<void>;
}

export interface PebbleOptions {
  /** Where Pebble validates http-01 and tls-alpn-01 challenges: the ACME client's HTTP and HTTPS ports. */
  httpPort: number;
  tlsPort: number;
  /** The lifetime of the certificates it issues. */
  validitySeconds: number;
}

/** Starts pebble-challtestsrv, then Pebble resolving through it; resolves once Pebble hands out its root and intermediate. */
export async function startPebble(dir: string, options: PebbleOptions): Promise<Pebble> {
  const files = requirePebble();
  const [dnsPort, challManagementPort, acmePort, managementPort] = [await reservePort(), await reservePort(), await reservePort(), await reservePort()];
  // Only DNS: Caddy itself answers the challenges. No AAAA answers, so Pebble dials 127.0.0.1.
  const dns = spawnLogged(dir, "pebble-challtestsrv", files.challtestsrv, [
    ...["-dnsserver", `127.0.0.1:${dnsPort}`, "-management", `127.0.0.1:${challManagementPort}`],
    ...["-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", ""],
    ...["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
  ]);
  const processes: LoggedProcess[] = [dns];
  const stop = async () => {
    for (const started of [...processes].reverse()) await started.stop();
  };
  const logs = () => processes.map((p) => `--- ${p.logFile}\n${p.logs()}`).join("\n");
  try {
    await eventually("pebble-challtestsrv's DNS (TCP, which Pebble queries over)", () => tcpAccepts(dnsPort), 15_000);
    const configFile = join(dir, "pebble-config.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        pebble: {
          listenAddress: `127.0.0.1:${acmePort}`,
          managementListenAddress: `127.0.0.1:${managementPort}`,
          certificate: files.httpsCertificate,
          privateKey: files.httpsKey,
          httpPort: options.httpPort,
          tlsPort: options.tlsPort,
          ocspResponderURL: "",
          externalAccountBindingRequired: false,
          keyAlgorithm: "ecdsa",
          // One profile: an order naming none (as Caddy's) would otherwise get a random one.
          profiles: { default: { description: "short-lived, for the renewal test", validityPeriod: options.validitySeconds } },
        },
      }),
    );
    const pebble = spawnLogged(dir, "pebble", files.pebble, ["-config", configFile, "-dnsserver", `127.0.0.1:${dnsPort}`], {
      // No random sleeps before validating; no injected bad nonces; a renewal validates again (Pebble still reuses 1 authorisation in 100).
      PEBBLE_VA_NOSLEEP: "1",
      PEBBLE_WFE_NONCEREJECT: "0",
      PEBBLE_AUTHZREUSE: "0",
    });
    processes.push(pebble);
    const minica = readFileSync(files.minicaRoot, "utf8");
    const management = (path: string) => httpsText(`https://127.0.0.1:${managementPort}${path}`, minica);
    const root = await eventually("Pebble's management interface", () => management("/roots/0"), 15_000);
    return {
      directoryUrl: `https://127.0.0.1:${acmePort}/dir`,
      root,
      intermediate: await management("/intermediates/0"),
      processes,
      logs,
      stop,
    };
  } catch (error) {
    const output = logs();
    await stop();
    throw new Error(`${String(error)}\n${output}`);
  }
}

function tcpAccepts(port: number): Promise<true> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", reject);
  });
}

function httpsText(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, { ca, timeout: 5_000 }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`${url} → ${res.statusCode}: ${text}`))));
      res.on("error", reject);
    }).on("error", reject);
  });
}
