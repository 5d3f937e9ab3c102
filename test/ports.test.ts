// The ports tests give to the servers they start (test/ports.ts): never from the kernel's
// ephemeral range, never the same for two test processes at once, held until the process ends.
import { spawn, type ChildProcess } from "node:child_process";
import { createConnection } from "node:net";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { ephemeralPortRange, reserveFixedPorts, reservePort, reservePortPair, testPortRange } from "./ports.ts";

const PORTS_MODULE = fileURLToPath(new URL("./ports.ts", import.meta.url));

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill("SIGKILL");
});

/** A Node process that reserves `ports` ports and `pairs` pairs, prints them as one JSON line, and keeps them until it is killed. */
function reservingProcess(ports: number, pairs: number): { child: ChildProcess; reserved: Promise<{ ports: number[]; pairs: number[] }> } {
  const script = `
    import { reservePort, reservePortPair } from ${JSON.stringify(PORTS_MODULE)};
    const ports = [], pairs = [];
    for (let i = 0; i < ${ports}; i++) ports.push(await reservePort());
    for (let i = 0; i < ${pairs}; i++) pairs.push(await reservePortPair());
    console.log(JSON.stringify({ ports, pairs }));
    setInterval(() => {}, 60_000);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const reserved = new Promise<{ ports: number[]; pairs: number[] }>((resolve, reject) => {
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      stdout += chunk.toString("utf8");
      if (stdout.includes("\n")) resolve(JSON.parse(stdout) as { ports: number[]; pairs: number[] });
    });
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    child.once("exit", (code, signal) => reject(new Error(`the reserving process exited (${code ?? signal}) before it printed its ports: ${stderr}`)));
  });
  return { child, reserved };
}

/** Whether a process holds the lock of `port` (its abstract unix socket accepts connections). */
function locked(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ path: `\0berth-test-port-${port}` });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A Node process that reserves the fixed `ports` (reserveFixedPorts), says so, and keeps them until it is killed. */
function fixedPortsProcess(ports: number[]): { child: ChildProcess; held: Promise<void> } {
  const script = `
    import { reserveFixedPorts } from ${JSON.stringify(PORTS_MODULE)};
    await reserveFixedPorts(${JSON.stringify(ports)});
    console.log("held");
    setInterval(() => {}, 60_000);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const held = new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => chunk.toString("utf8").includes("held") && resolve());
    child.once("exit", (code, signal) => reject(new Error(`the process exited (${code ?? signal}) before it held its ports`)));
  });
  return { child, held };
}

describe("test ports", () => {
  it("come from below the kernel's ephemeral range, where no outgoing connection can take them", async () => {
    const ephemeral = ephemeralPortRange();
    const range = testPortRange();
    expect(range.low).toBeGreaterThanOrEqual(20_000);
    const ports = [];
    for (let i = 0; i < 20; i++) ports.push(await reservePort());
    const pair = await reservePortPair();
    for (const port of [...ports, pair, pair + 1]) {
      expect(port).toBeGreaterThanOrEqual(range.low);
      expect(port).toBeLessThanOrEqual(range.high);
      expect(port < ephemeral.low || port > ephemeral.high, `${port} is in the ephemeral range ${ephemeral.low}–${ephemeral.high}`).toBe(true);
    }
    expect(new Set(ports).size).toBe(ports.length);
  });

  it("are never the same for two processes reserving at the same time", async () => {
    const processes = Array.from({ length: 4 }, () => reservingProcess(100, 20));
    const all = (await Promise.all(processes.map((p) => p.reserved))).flatMap(({ ports, pairs }) => [...ports, ...pairs.flatMap((port) => [port, port + 1])]);
    expect(all).toHaveLength(4 * (100 + 2 * 20));
    const repeated = all.filter((port, index) => all.indexOf(port) !== index);
    expect(repeated).toEqual([]);
  });

  it("a fixed port (443, for federation) is one process's at a time: another waits, and gets it once that process is gone", async () => {
    // A free port to stand for 443: reserved by a process that then ends, releasing it.
    const spare = reservingProcess(2, 0);
    const { ports } = await spare.reserved;
    const gone = new Promise((resolve) => spare.child.once("exit", resolve));
    spare.child.kill("SIGKILL");
    await gone;

    const holder = fixedPortsProcess(ports);
    await holder.held;
    for (const port of ports) expect(await locked(port)).toBe(true);
    await expect(reserveFixedPorts([ports[1]!], { timeoutMs: 1_500 })).rejects.toThrow(/another test process held them/);

    const exited = new Promise((resolve) => holder.child.once("exit", resolve));
    holder.child.kill("SIGKILL");
    await exited;
    const release = await reserveFixedPorts(ports);
    for (const port of ports) expect(await locked(port)).toBe(true);
    release();
    for (const port of ports) expect(await locked(port)).toBe(false);
  });

  it("stay reserved while their process lives and are released when it dies, even by SIGKILL", async () => {
    const { child, reserved } = reservingProcess(3, 0);
    const { ports } = await reserved;
    for (const port of ports) expect(await locked(port)).toBe(true);
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
    for (const port of ports) expect(await locked(port)).toBe(false);
  });
});
