// Ports for the servers tests start and must name before they run (wrangler dev, Caddy, a control
// plane restarted on the port it had). Never from the kernel's ephemeral range: any outgoing
// connection on the machine may take a port from there between the pick and the server's bind,
// which is why a port "found free" by binding port 0 could be in use a moment later. Ports are
// picked below that range instead, locked against every other test process on the machine for
// the life of the process that reserved them, and checked free by binding them.
// (docs/decisions.md, "Test ports".) A server that can bind port 0 itself and say which port it
// got needs none of this.
import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";

/** Test ports start here, above the ports local services are usually configured on. */
const LOWEST_TEST_PORT = 20_000;
const HIGHEST_PORT = 65_535;

/** The kernel's range for ports it picks itself: outgoing connections and binds to port 0. */
export function ephemeralPortRange(): { low: number; high: number } {
  const file = "/proc/sys/net/ipv4/ip_local_port_range";
  const [low, high] = readFileSync(file, "utf8").trim().split(/\s+/).map(Number);
  if (!Number.isInteger(low) || !Number.isInteger(high)) throw new Error(`cannot read the ephemeral port range from ${file}`);
  return { low: low!, high: high! };
}

/** The ports tests may use: from LOWEST_TEST_PORT to just below the ephemeral range, or else above it. */
export function testPortRange(): { low: number; high: number } {
  const ephemeral = ephemeralPortRange();
  if (ephemeral.low - 1 >= LOWEST_TEST_PORT + 1_000) return { low: LOWEST_TEST_PORT, high: ephemeral.low - 1 };
  const above = Math.max(ephemeral.high + 1, LOWEST_TEST_PORT);
  if (HIGHEST_PORT - above >= 1_000) return { low: above, high: HIGHEST_PORT };
  throw new Error(
    `the kernel's ephemeral port range ${ephemeral.low}–${ephemeral.high} leaves no room for test ports outside it; ` +
      "narrow it (sysctl -w net.ipv4.ip_local_port_range='32768 60999')",
  );
}

/**
 * Locks held by this process, one per reserved port: a listener on the abstract unix socket
 * "berth-test-port-<port>", which one process at a time can hold and the kernel releases when
 * that process ends, however it ends (so no lock outlives a crashed test).
 */
const locks = new Map<number, Server>();

function lock(port: number): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once("error", () => resolve(false));
    server.listen({ path: `\0berth-test-port-${port}` }, () => {
      server.unref();
      locks.set(port, server);
      resolve(true);
    });
  });
}

function unlock(port: number): void {
  locks.get(port)?.close();
  locks.delete(port);
}

type Bind = "free" | "taken" | "no such family";
const bindOutcome = (error: NodeJS.ErrnoException): Bind => (error.code === "EAFNOSUPPORT" || error.code === "EADDRNOTAVAIL" ? "no such family" : "taken");

function bindTcp(port: number, host: string): Promise<Bind> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", (error) => resolve(bindOutcome(error)));
    server.listen(port, host, () => server.close(() => resolve("free")));
  });
}

function bindUdp(port: number, host: string): Promise<Bind> {
  return new Promise((resolve) => {
    const socket = createSocket(host.includes(":") ? "udp6" : "udp4");
    socket.once("error", (error) => resolve(bindOutcome(error)));
    socket.bind(port, host, () => socket.close(() => resolve("free")));
  });
}

/**
 * Whether `port` is free for TCP and UDP on every IPv4 and IPv6 address: Caddy binds its HTTPS
 * port on all of them, for HTTP/3 over UDP too, and fails to load its config if any is taken.
 */
async function bindable(port: number): Promise<boolean> {
  for (const host of ["0.0.0.0", "::"]) {
    if ((await bindTcp(port, host)) === "taken" || (await bindUdp(port, host)) === "taken") return false;
  }
  return true;
}

async function reserveConsecutive(count: number): Promise<number> {
  const range = testPortRange();
  const starts = range.high - range.low + 2 - count;
  const offset = Math.floor(Math.random() * starts);
  for (let tried = 0; tried < starts; tried++) {
    const first = range.low + ((offset + tried) % starts);
    const block = Array.from({ length: count }, (_, i) => first + i);
    const taken: number[] = [];
    for (const port of block) {
      if (locks.has(port) || !(await lock(port))) break;
      taken.push(port);
    }
    if (taken.length === count && (await Promise.all(block.map(bindable))).every(Boolean)) return first;
    taken.forEach(unlock);
  }
  throw new Error(`no ${count} consecutive free ports in ${range.low}–${range.high}`);
}

/** A free port, outside the ephemeral range, that no other test process gets while this one runs. */
export function reservePort(): Promise<number> {
  return reserveConsecutive(1);
}

/** The lower of two such ports in a row: Caddy's HTTPS port and, one above it, its HTTP port (scripts/dev.mjs). */
export function reservePortPair(): Promise<number> {
  return reserveConsecutive(2);
}

/**
 * The lowest of `count` such ports in a row. `npm run dev -- --hosts N` takes N + 1: the HTTPS port
 * every host's Caddy shares (each on an address of its own), and host i's HTTP port i above it.
 */
export function reservePorts(count: number): Promise<number> {
  return reserveConsecutive(count);
}

/**
 * Fixed ports a test cannot do without (443, where Matrix servers look for each other's
 * .well-known): locked like the others, waiting while another test process holds one, then
 * checked free by binding them. Returns what releases them (the locks also go with the process).
 */
export async function reserveFixedPorts(ports: number[], { timeoutMs = 15 * 60_000 } = {}): Promise<() => void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const taken: number[] = [];
    for (const port of ports) {
      if (locks.has(port) || !(await lock(port))) break;
      taken.push(port);
    }
    if (taken.length === ports.length) break;
    taken.forEach(unlock);
    if (Date.now() > deadline) throw new Error(`ports ${ports.join(", ")}: another test process held them for ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
  const release = () => ports.forEach(unlock);
  for (const port of ports) {
    if (!(await bindable(port))) {
      release();
      throw new Error(`port ${port} is in use by a program that is not a test (or binding it needs root)`);
    }
  }
  return release;
}
