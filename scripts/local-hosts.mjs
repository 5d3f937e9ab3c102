// The local hosts of `npm run dev` (scripts/dev.mjs): each a berth-agent with its own config
// directory and data root, and its own Caddy for the homeservers' HTTPS.
//
// One host (the default) is the development set-up as it always was: its agent in
// <state>/agent, its data in <state>/agent-data, its Caddy in <state>/caddy listening on every
// interface, no host namespace, and the homeservers federating with each other through that
// Caddy (--allow-local-federation).
//
// With --hosts N (2 to 9), host i (1 … N) is a separate host sharing this machine's Docker
// Engine: everything of it under <state>/hosts/h<i>/ (agent/, agent-data/, caddy/), its agent in
// host namespace "h<i>" (agent.json's hostNamespace: its own container, network and firewall
// names, uids of its own; it sees and touches only its own containers), its Caddy on
// 127.0.0.<i+1> at the same HTTPS port as every other host's (the port the Worker puts in every
// homeserver's URL), its HTTP port the HTTPS port + i. `<name>.berth.localhost` resolves to
// 127.0.0.1 in a browser, so reaching a homeserver on host i takes a resolver that sends its
// name to 127.0.0.<i+1> (the e2e tests have one: test/e2e/local-hosts-helpers.ts). The Caddies
// listen on loopback only, which Synapse's containers cannot reach: these homeservers do not
// federate with each other (no --allow-local-federation).
//
// Every host is enrolled with a join token from the Worker's /dev/join-token, unless
// --enroll-by-hand: then each host not yet enrolled waits, its Caddy running, for
// `berth-agent enroll` to write its agent.json (the command is printed, the join token is
// an operator's), and its agent starts once it has.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const agentMain = join(root, "agent", "main.ts");
export const MAX_LOCAL_HOSTS = 9;

/** The hosts `npm run dev -- --hosts <count>` runs, 1 … count, all serving HTTPS on `httpsPort`. */
export function localHosts(persistTo, count, httpsPort) {
  if (!Number.isInteger(count) || count < 1 || count > MAX_LOCAL_HOSTS) throw new Error(`--hosts: a number from 1 to ${MAX_LOCAL_HOSTS}, not ${count}`);
  if (count === 1) {
    return [
      {
        index: 1,
        name: "dev-host",
        configDir: join(persistTo, "agent"),
        dataRoot: join(persistTo, "agent-data"),
        caddyDir: join(persistTo, "caddy"),
        httpsPort,
        httpPort: httpsPort + 1,
      },
    ];
  }
  return Array.from({ length: count }, (_, i) => {
    const index = i + 1;
    const dir = join(persistTo, "hosts", `h${index}`);
    return {
      index,
      name: `dev-host-${index}`,
      hostNamespace: `h${index}`,
      address: `127.0.0.${index + 1}`,
      configDir: join(dir, "agent"),
      dataRoot: join(dir, "agent-data"),
      caddyDir: join(dir, "caddy"),
      httpsPort,
      httpPort: httpsPort + index,
    };
  });
}

/** The config directories of every local agent a state directory holds (the single host's and each of --hosts N's). */
export function localAgentConfigDirs(persistTo) {
  const hostsDir = join(persistTo, "hosts");
  const numbered = existsSync(hostsDir) ? readdirSync(hostsDir).map((name) => join(hostsDir, name, "agent")) : [];
  return [join(persistTo, "agent"), ...numbered];
}

/** A local agent's agent.json (its config directory `configDir`), once it is enrolled; undefined before. */
export function localAgentConfig(configDir) {
  try {
    return JSON.parse(readFileSync(join(configDir, "agent.json"), "utf8"));
  } catch {
    return undefined;
  }
}

/** The homeserver names a local agent keeps routes for in its Caddy: its record of them, <stateDir>/proxy-routes.json. */
export function routedServerNames(configDir) {
  const stateDir = localAgentConfig(configDir)?.stateDir ?? join(configDir, "state");
  try {
    return Object.keys(JSON.parse(readFileSync(join(stateDir, "proxy-routes.json"), "utf8")).routes);
  } catch {
    return [];
  }
}

/** --stand-in-domain values (`acme.test=127.0.0.1:8080`) as the proxy's standInDomains; undefined when none. */
export function parseStandInDomains(values) {
  if (values.length === 0) return undefined;
  const domains = {};
  for (const value of values) {
    const match = /^([a-z0-9.-]+\.test)=([^:=\s]+):(\d{1,5})$/.exec(value);
    if (!match) throw new Error(`--stand-in-domain: <domain under .test>=<host>:<port>, such as acme.test=127.0.0.1:8080, not ${JSON.stringify(value)}`);
    domains[match[1]] = { host: match[2], port: Number(match[3]) };
  }
  return domains;
}

/** The agent.json section of a host's Caddy: its admin API on a socket in its directory, its own internal CA (and the stand-in domains, when any). */
function proxyConfig(host, standInDomains) {
  return {
    adminAddress: `unix/${join(host.caddyDir, "admin.sock")}`,
    tls: "internal",
    httpsPort: host.httpsPort,
    httpPort: host.httpPort,
    publicHttpsPort: host.httpsPort,
    storageDir: host.caddyDir,
    ...(host.address ? { listenHost: host.address, connectHost: host.address } : {}),
    ...(standInDomains ? { standInDomains } : {}),
  };
}

/**
 * Brings up every host: its Caddy (when installed), its enrollment (automatic unless `enrollByHand`),
 * then its agent. `start(name, args, env, command)` runs a child that stops the whole product when it ends.
 */
export async function startLocalHosts({ hosts, baseUrl, enrollByHand, standInDomains, start, log }) {
  const caddy = caddyInstalled();
  if (!caddy) log("Caddy is not installed: homeservers will run but not be served over HTTPS (apt-get install caddy)");
  await Promise.all(hosts.map((host) => startHost({ host, single: hosts.length === 1, caddy, baseUrl, enrollByHand, standInDomains, start, log })));
}

async function startHost({ host, single, caddy, baseUrl, enrollByHand, standInDomains, start, log }) {
  const label = single ? "the local berth-agent" : `host ${host.index} (${host.name})`;
  const proxy = caddy ? startCaddy(host, label, standInDomains, start, log) : null;
  if (!existsSync(join(host.configDir, "agent.json"))) {
    if (enrollByHand) await waitForEnrollment(host, label, baseUrl, log);
    else await enroll(host, baseUrl);
  }
  // Re-written at each start, so a changed port takes effect.
  const agentFile = join(host.configDir, "agent.json");
  const agentConfig = JSON.parse(readFileSync(agentFile, "utf8"));
  writeFileSync(
    agentFile,
    `${JSON.stringify({ ...agentConfig, ...(proxy ? { proxy } : {}), ...(host.hostNamespace ? { hostNamespace: host.hostNamespace } : {}) }, null, 2)}\n`,
  );
  // The single host's homeservers federate with each other through its Caddy (development only: their
  // names resolve to this machine, its private address is let through, Caddy's CA is trusted).
  const federate = single && proxy;
  const flags = ["--allow-unencrypted-data-root", ...(federate ? ["--allow-local-federation"] : [])];
  start(single ? "berth-agent" : `berth-agent ${host.name}`, [agentMain, "run", "--config", host.configDir, ...flags], process.env);
  log(`${label} running (data root not encrypted${federate ? "; homeservers federate with each other" : ""}: development only)`);
}

/** Enrolls the host with a token from the Worker's development route (its identity is kept in its config directory). */
async function enroll(host, baseUrl) {
  const response = await fetch(`${baseUrl}/dev/join-token`, { method: "POST" });
  if (!response.ok) throw new Error(`could not mint a join token: ${response.status} ${await response.text()}`);
  const { token } = await response.json();
  const child = spawn(process.execPath, enrollArgs(host, baseUrl), {
    cwd: root,
    env: { ...process.env, BERTH_AGENT_JOIN_TOKEN: token },
    stdio: "inherit",
  });
  const code = await new Promise((resolveExit) => child.on("exit", resolveExit));
  if (code !== 0) throw new Error(`the local agent could not enroll (exit ${code})`);
}

function enrollArgs(host, baseUrl) {
  return [agentMain, "enroll", "--url", baseUrl, "--config", host.configDir, "--data-root", host.dataRoot, "--name", host.name];
}

async function waitForEnrollment(host, label, baseUrl, log) {
  const command = ["BERTH_AGENT_JOIN_TOKEN=<join token>", "node", ...enrollArgs(host, baseUrl).map((arg) => arg.replace(`${root}/`, ""))].join(" ");
  log(`${label} waits to be enrolled by hand: ${command}`);
  while (!existsSync(join(host.configDir, "agent.json"))) await sleep(250);
  log(`${label} enrolled`);
}

function caddyInstalled() {
  const found = spawnSync("caddy", ["version"], { stdio: "ignore" });
  return !found.error && found.status === 0;
}

/** The host's Caddy, started with only its admin API and storage: the agent loads the rest. */
function startCaddy(host, label, standInDomains, start, log) {
  mkdirSync(host.caddyDir, { recursive: true });
  const proxy = proxyConfig(host, standInDomains);
  const initial = join(host.caddyDir, "initial.json");
  writeFileSync(initial, JSON.stringify({ admin: { listen: proxy.adminAddress }, storage: { module: "file_system", root: host.caddyDir } }));
  start(`caddy of ${label}`, ["run", "--config", initial], process.env, "caddy");
  const at = host.address ? `${host.address}:${host.httpsPort}` : `port ${host.httpsPort}`;
  log(
    `Caddy of ${label} serving homeservers on https://<name>.berth.localhost at ${at} (trust ${join(host.caddyDir, "pki", "authorities", "local", "root.crt")})`,
  );
  for (const [domain, upstream] of Object.entries(standInDomains ?? {})) {
    log(`Caddy of ${label} standing in for ${domain} (development): its HTTPS goes to http://${upstream.host}:${upstream.port}`);
  }
  return proxy;
}
