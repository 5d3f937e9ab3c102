// The daemon (what `berth-agent run` starts), in this process against a local control plane:
// stopped — on request or by a close that retrying cannot fix — it leaves no timer running.
// Its timers are unref'd, so process.getActiveResourcesInfo() does not see them; the test's
// fake timers count every one, unref'd or not. Sockets and waitFor stay real.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CLOSE } from "../../protocol/messages.ts";
import { ConfigError, configPath, loadConfig, writeConfig, type AgentConfigFile } from "../../agent/config.ts";
import { EXIT_REVOKED } from "../../agent/connection.ts";
import { generateHostKey, publicKeyBase64url } from "../../agent/credentials.ts";
import { startDaemon } from "../../agent/daemon.ts";
import { ControlPlane, captureLog, onCleanup, runCleanups, tempDir, waitFor, type ControlPlaneOptions } from "./helpers.ts";

const HOST = "host_test";

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
});

afterEach(async () => {
  vi.useRealTimers();
  await runCleanups();
});

/** A daemon enrolled with `cp`, its proxy a Caddy that is not running (so its repair and certificate timers exist). */
async function startAgainst(cp: ControlPlane, extra: Partial<AgentConfigFile> = {}) {
  const privateKey = generateHostKey();
  cp.hosts.set(HOST, publicKeyBase64url(privateKey));
  const configDir = tempDir();
  writeConfig(configDir, {
    controlPlaneUrl: cp.url,
    hostId: HOST,
    connectUrl: cp.connectUrl,
    dataRoot: join(configDir, "data"),
    proxy: { adminAddress: `unix/${join(configDir, "caddy-admin.sock")}`, tls: "internal" },
    ...extra,
  });
  const captured = captureLog();
  const daemon = await startDaemon({ config: loadConfig(configDir), privateKey, allowUnencrypted: true, log: captured.log });
  onCleanup(async () => {
    await daemon.stop(0, "test cleanup", 0);
  });
  return { daemon, captured };
}

async function controlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  return new ControlPlane(options).start();
}

describe("the host's public addresses", () => {
  it("are what agent.json says, sent in the hello for its homeservers' DNS records", async () => {
    const cp = await controlPlane();
    const { captured } = await startAgainst(cp, { publicAddresses: { ipv4: "203.0.113.5", ipv6: "2001:db8::5" } });
    await waitFor(() => captured.has("connected to the control plane"), "the welcome");
    expect(cp.last()!.of("hello")[0]!.publicAddresses).toEqual({ ipv4: "203.0.113.5", ipv6: "2001:db8::5" });
  });

  it("are refused at start when they are not addresses", () => {
    const configDir = tempDir();
    const base = { controlPlaneUrl: "http://127.0.0.1:1", hostId: HOST, connectUrl: "ws://127.0.0.1:1/api/agent/connect" };
    // Written by hand: writeConfig itself refuses them.
    for (const publicAddresses of [{ ipv4: "203.0.113.300" }, { ipv4: "203.0.113.5", ipv6: "not-v6" }, { ipv4: "berth.example" }]) {
      writeFileSync(configPath(configDir), JSON.stringify({ ...base, publicAddresses }));
      expect(() => loadConfig(configDir)).toThrow(ConfigError);
      expect(() => loadConfig(configDir)).toThrow(/publicAddresses/);
    }
  });
});

describe("the daemon", () => {
  it("stopped, leaves no timer running: not its own, its parts' or the connection's", async () => {
    const cp = await controlPlane();
    const { daemon, captured } = await startAgainst(cp);
    await waitFor(() => captured.has("connected to the control plane"), "the welcome");
    // Journal pruning, inventory refresh, storage measurement, usage sampling, proxy repair,
    // the certificate check (hourly, and once after start) and the connection's heartbeat.
    expect(vi.getTimerCount()).toBe(8);

    expect(await daemon.stop(0, "test", 1_000)).toBe(0);
    // The control plane's end of the socket (in this process too) has let go of its own timer.
    expect((await waitFor(() => cp.last()?.closed, "the close on the control plane's side")).code).toBe(1001);

    expect(vi.getTimerCount()).toBe(0);
    expect(await daemon.exited).toBe(0);
  });

  it("stopped by the control plane revoking the host, exits 3 and leaves no timer running", async () => {
    const cp = await controlPlane({ onHello: () => CLOSE.REVOKED });
    const { daemon, captured } = await startAgainst(cp);

    expect(await daemon.exited).toBe(EXIT_REVOKED);
    await waitFor(() => cp.last()?.closed, "the close on the control plane's side");

    expect(vi.getTimerCount()).toBe(0);
    expect(captured.has("stopped")).toBe(true);
  });
});
