// The real CLI, spawned with this Node (22, running the TypeScript directly),
// against a local control plane.
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createPrivateKey } from "node:crypto";
import { hostname } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CLOSE, enrollRequest } from "../../protocol/messages.ts";
import { publicKeyBase64url } from "../../agent/credentials.ts";
import { defaultHostName, enroll } from "../../agent/enroll.ts";
import { Journal } from "../../agent/journal.ts";
import { ControlPlane, runCleanups, runCli, startCli, tempDir, waitFor } from "./helpers.ts";

afterEach(runCleanups);

const TOKEN = "bjt_secret-join-token-0123456789";

async function enrolled(cp: ControlPlane, extra: Record<string, unknown> = {}) {
  const configDir = tempDir();
  const dataRoot = join(tempDir(), "data");
  const result = await runCli(["enroll", "--url", cp.url, "--token", TOKEN, "--name", "test-host", "--config", configDir, "--data-root", dataRoot]);
  expect(result.code, result.stderr).toBe(0);
  const file = join(configDir, "agent.json");
  const config = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  writeFileSync(file, JSON.stringify({ ...config, heartbeatIntervalMs: 500, usageIntervalMs: 100, reconnectBaseMs: 20, reconnectMaxMs: 200, ...extra }));
  return { configDir, dataRoot };
}

describe("berth-agent CLI: usage", () => {
  it("--help prints the usage and exits 0; each command has its own help", async () => {
    const main = await runCli(["--help"]);
    expect(main.code).toBe(0);
    expect(main.stdout).toMatch(/Usage:/);
    for (const cmd of ["enroll --url", "run [--config", "status [--config", "--allow-unencrypted-data-root", "Exit codes"]) {
      expect(main.stdout).toContain(cmd);
    }
    for (const [command, mentions] of [
      ["enroll", ["--url", "--token", "--name", "--config", "0600"]],
      ["run", ["--upkeep-image", "--allow-unencrypted-data-root", "--allow-no-storage-quota", "--allow-local-federation", "SIGTERM", "3 host revoked"]],
      ["status", ["--json"]],
    ] as const) {
      const r = await runCli([command, "--help"]);
      expect(r.code).toBe(0);
      for (const m of mentions) expect(r.stdout).toContain(m);
    }
  });

  it("bad usage exits 2 with a message and the usage on stderr", async () => {
    const none = await runCli([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/Usage:/);

    const unknown = await runCli(["launch"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "launch"/);

    const badOption = await runCli(["run", "--no-such-option"]);
    expect(badOption.code).toBe(2);
    expect(badOption.stderr).toMatch(/Unknown option '--no-such-option'[\s\S]*Usage: berth-agent run/);

    const badImage = await runCli(["run", "--upkeep-image", "berth/upkeep:latest; rm -rf /"]);
    expect(badImage.code).toBe(2);
    expect(badImage.stderr).toMatch(/--upkeep-image: not an image reference[\s\S]*Usage: berth-agent run/);

    const noToken = await runCli(["enroll", "--url", "https://example.invalid"]);
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toMatch(/needs --token/);

    const version = await runCli(["--version"]);
    expect(version).toMatchObject({ code: 0, stdout: "0.1.0\n" });
  });
});

describe("berth-agent enroll", () => {
  it("registers the public key and writes agent.json and host-key.pem (0600), never printing the token", async () => {
    const cp = await new ControlPlane().start();
    const configDir = tempDir();
    const dataRoot = join(tempDir(), "data");
    const r = await runCli(["enroll", "--url", cp.url, "--token", TOKEN, "--name", "edge-1", "--config", configDir, "--data-root", dataRoot]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Enrolled as host host_test \("edge-1", region us-east\)/);
    expect(r.stdout + r.stderr).not.toContain(TOKEN);

    const body = enrollRequest.parse(cp.enrollments[0]);
    expect(body).toMatchObject({ joinToken: TOKEN, name: "edge-1", agentVersion: "0.1.0" });
    expect(body.capacity.memoryMiB).toBeGreaterThan(0);
    expect(body.capacity.cpus).toBeGreaterThan(0);
    expect(body.capacity.diskGiB).toBeGreaterThan(0);

    const keyFile = join(configDir, "host-key.pem");
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(publicKeyBase64url(createPrivateKey(readFileSync(keyFile)))).toBe(body.publicKey);
    const config = JSON.parse(readFileSync(join(configDir, "agent.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({ controlPlaneUrl: cp.url, hostId: "host_test", connectUrl: cp.connectUrl, dataRoot, region: "us-east", name: "edge-1" });
    expect(JSON.stringify(config)).not.toContain(TOKEN);

    const status = await runCli(["status", "--config", configDir, "--json"]);
    expect(status.code, status.stdout).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ enrolled: true, hostId: "host_test", hostKey: { ok: true }, problems: [] });

    const again = await runCli(["enroll", "--url", cp.url, "--token", TOKEN, "--config", configDir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already enrolled as host host_test.*--force/);
    expect(cp.enrollments).toHaveLength(1);
  });

  it("takes the token from the environment and names the host after the machine by default", async () => {
    const cp = await new ControlPlane().start();
    const configDir = tempDir();
    const r = await runCli(["enroll", "--url", `${cp.url}/`, "--config", configDir], { BERTH_AGENT_JOIN_TOKEN: TOKEN });
    expect(r.code, r.stderr).toBe(0);
    expect(enrollRequest.parse(cp.enrollments[0]).name).toBe(defaultHostName(hostname()));
  });

  it("shows the control plane's error message on a 4xx, exits 1, writes nothing and does not leak the token", async () => {
    const cp = await new ControlPlane({
      onEnroll: (_body, _req, res) => {
        res.writeHead(403, { "content-type": "application/json" }).end(
          // A careless server echoing the token: the agent still must not print it.
          JSON.stringify({ error: { code: "invalid_join_token", message: `The join token ${TOKEN} is invalid or has expired.` } }),
        );
      },
    }).start();
    const configDir = tempDir();
    const r = await runCli(["enroll", "--url", cp.url, "--token", TOKEN, "--config", configDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/enrollment refused: The join token \[redacted\] is invalid or has expired\. \(invalid_join_token, HTTP 403\)/);
    expect(r.stdout + r.stderr).not.toContain(TOKEN);
    expect(existsSync(join(configDir, "agent.json"))).toBe(false);
    expect(existsSync(join(configDir, "host-key.pem"))).toBe(false);
  });

  it("asks again when the control plane fails on its side, saying so, and enrolls once it answers", async () => {
    const cp: ControlPlane = await new ControlPlane({
      onEnroll: (_body, _req, res) => {
        if (cp.enrollments.length === 1) {
          res
            .writeHead(500, { "content-type": "application/json" })
            .end(JSON.stringify({ error: { code: "internal_error", message: "Something went wrong on our side." } }));
          return;
        }
        res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({ hostId: "host_test", region: "us-east", connectUrl: cp.connectUrl }));
      },
    }).start();
    const configDir = tempDir();
    const r = await runCli(["enroll", "--url", cp.url, "--token", TOKEN, "--name", "edge-2", "--config", configDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain("enrollment refused: Something went wrong on our side. (internal_error, HTTP 500); trying again in 1 s (attempt 2 of 4)");
    expect(r.stdout).toMatch(/Enrolled as host host_test \("edge-2", region us-east\)/);
    expect(r.stdout + r.stderr).not.toContain(TOKEN);
    // The same key and token both times: the first attempt wrote nothing here either.
    const [first, second] = cp.enrollments.map((body) => enrollRequest.parse(body));
    expect(second).toEqual(first);
    expect(existsSync(join(configDir, "agent.json"))).toBe(true);
  });

  it("gives up after four attempts at a failing or unreachable control plane, writing nothing", async () => {
    const cp = await new ControlPlane({ onEnroll: (_body, _req, res) => void res.writeHead(503).end() }).start();
    const retries: string[] = [];
    const configDir = tempDir();
    const options = { token: TOKEN, configDir, agentVersion: "0.1.0", retryDelaysMs: [0, 0, 0], onRetry: (reason: string) => void retries.push(reason) };
    await expect(enroll({ ...options, url: cp.url })).rejects.toThrow("enrollment refused: HTTP 503 Service Unavailable (after 4 attempts)");
    expect(cp.enrollments).toHaveLength(4);
    expect(retries).toHaveLength(3);
    await cp.stop();
    await expect(enroll({ ...options, url: cp.url })).rejects.toThrow(/^cannot reach the control plane at http:\/\/127\.0\.0\.1:\d+: .* \(after 4 attempts\)$/);
    expect(existsSync(join(configDir, "agent.json"))).toBe(false);
    expect(existsSync(join(configDir, "host-key.pem"))).toBe(false);
  });

  it("takes a refusal after a failure as final, saying an earlier attempt may have been accepted", async () => {
    const cp: ControlPlane = await new ControlPlane({
      onEnroll: (_body, _req, res) => {
        if (cp.enrollments.length === 1) return void res.destroy(); // the answer is lost
        res
          .writeHead(400, { "content-type": "application/json" })
          .end(JSON.stringify({ error: { code: "invalid_join_token", message: "This join token is invalid." } }));
      },
    }).start();
    const configDir = tempDir();
    await expect(enroll({ url: cp.url, token: TOKEN, name: "edge-3", configDir, agentVersion: "0.1.0", retryDelaysMs: [0, 0, 0] })).rejects.toThrow(
      'enrollment refused: This join token is invalid. (invalid_join_token, HTTP 400); an earlier attempt may have been accepted: look for host "edge-3" before making a new join token',
    );
    expect(cp.enrollments).toHaveLength(2);
  });

  it("refuses plain http to anything but localhost, and names that the control plane would reject", async () => {
    const http = await runCli(["enroll", "--url", "http://berth.example.com", "--token", TOKEN, "--config", tempDir()]);
    expect(http.code).toBe(1);
    expect(http.stderr).toMatch(/must use https/);
    const name = await runCli(["enroll", "--url", "https://berth.example.com", "--token", TOKEN, "--name", "Bad_Name", "--config", tempDir()]);
    expect(name.code).toBe(1);
    expect(name.stderr).toMatch(/host name "Bad_Name" is not allowed/);
    expect(http.stderr + name.stderr).not.toContain(TOKEN);
  });
});

describe("berth-agent run", () => {
  it("connects, runs jobs, reports the unencrypted data root it was allowed to use, warns of no storage quotas, and exits 0 on SIGTERM with a 1001 close", async () => {
    const cp = await new ControlPlane({ heartbeatIntervalMs: 500, usageIntervalMs: 100 }).start();
    const { configDir, dataRoot } = await enrolled(cp);
    const agent = startCli(["run", "--config", configDir, "--allow-unencrypted-data-root", "--allow-no-storage-quota"]);
    const socket = await waitFor(() => cp.welcomed(0), "welcome", 20_000);
    const hello = socket.of("hello")[0]!;
    expect(hello.diskEncryption).toMatchObject({ dataRoot, allowUnencrypted: true });
    expect(hello.agentVersion).toBe("0.1.0");

    socket.sendJob({ id: "noop-1", kind: "noop" });
    socket.sendJob({ id: "ensure-1", kind: "workload.ensure", payload: { id: "hs-1", kind: "homeserver", spec: { v: 1 } } });
    await waitFor(() => socket.of("job.result").length === 2 && socket.of("inventory").length === 1, "results and inventory");
    expect(socket.of("job.result").find((m) => m.id === "ensure-1")).toMatchObject({ ok: true });
    expect(existsSync(join(dataRoot, "workloads", "hs-1.json"))).toBe(true);
    await waitFor(() => socket.of("usage").length >= 1, "a usage message");
    expect(socket.of("usage")[0]!.samples[0]!.host.memoryAvailableBytes).toBeGreaterThan(0);
    await waitFor(() => socket.pings >= 1, "a heartbeat ping");

    if (!hello.diskEncryption.encrypted) {
      expect(agent.logs().some((l) => l.level === "warn" && /DATA ROOT IS NOT ENCRYPTED/.test(String(l.msg)))).toBe(true);
    }
    expect(
      agent
        .logs()
        .some((l) => l.level === "warn" && /--allow-no-storage-quota was given: homeservers provisioned now get NO storage quota/.test(String(l.msg))),
    ).toBe(true);
    const logText = agent.stdout();
    expect(logText).not.toMatch(/BEGIN PRIVATE KEY/);
    expect(logText).not.toContain(hello.signature);

    agent.child.kill("SIGTERM");
    const exit = await agent.exited;
    expect(exit.code).toBe(0);
    await waitFor(() => socket.closed, "close seen by the control plane");
    expect(socket.closed!.code).toBe(1001);
  });

  it("takes upkeep's tool image from --upkeep-image (a pinned reference), else the locally built one, and logs which", async () => {
    const cp = await new ControlPlane().start();
    const { configDir } = await enrolled(cp);
    const pinned = `registry.example/berth/upkeep@sha256:${"ab".repeat(32)}`;
    const agent = startCli(["run", "--config", configDir, "--upkeep-image", pinned]);
    await waitFor(() => cp.welcomed(0), "welcome", 20_000);
    expect(agent.logs().find((line) => line.msg === "berth-agent starting")).toMatchObject({ upkeepImage: pinned });
    agent.child.kill("SIGTERM");
    expect((await agent.exited).code).toBe(0);

    const unpinned = startCli(["run", "--config", configDir]);
    await waitFor(() => cp.welcomed(1), "welcome", 20_000);
    expect(unpinned.logs().find((line) => line.msg === "berth-agent starting")).toMatchObject({ upkeepImage: "berth/upkeep:latest" });
  });

  it("without --allow-unencrypted-data-root, refuses customer data on an unencrypted data root", async () => {
    const cp = await new ControlPlane().start();
    const { configDir, dataRoot } = await enrolled(cp);
    startCli(["run", "--config", configDir]);
    const socket = await waitFor(() => cp.welcomed(0), "welcome", 20_000);
    const hello = socket.of("hello")[0]!;
    expect(hello.diskEncryption.allowUnencrypted).toBe(false);
    if (hello.diskEncryption.encrypted) return; // a machine with an encrypted data root has nothing to refuse
    socket.sendJob({ id: "ensure-2", kind: "workload.ensure", payload: { id: "hs-2", kind: "homeserver", spec: {} } });
    await waitFor(() => socket.of("job.result").length === 1, "result");
    expect(socket.of("job.result")[0]).toMatchObject({ ok: false, error: expect.stringMatching(/refusing to place customer data/) });
    expect(existsSync(join(dataRoot, "workloads", "hs-2.json"))).toBe(false);
    expect(socket.of("inventory")).toEqual([]);
  });

  it("on SIGTERM hands back a job that does not finish in time; the next agent process runs it again", async () => {
    const cp = await new ControlPlane().start();
    const { configDir } = await enrolled(cp, { shutdownTimeoutMs: 300 });
    const first = startCli(["run", "--config", configDir]);
    const s1 = await waitFor(() => cp.welcomed(0), "welcome", 20_000);
    s1.sendJob({ id: "long-1", kind: "sleep", payload: { ms: 600_000 } });
    await waitFor(() => s1.of("job.ack").length === 1, "ack");
    // Read-only: a second writer would clean up the agent's in-flight temporary files.
    const journal = new Journal(join(configDir, "state", "jobs"), { readOnly: true });
    await waitFor(() => journal.get("long-1")?.state === "running", "journal entry");

    first.child.kill("SIGTERM");
    const exit = await first.exited;
    expect(exit.code).toBe(0);
    expect(s1.of("job.result")).toEqual([]);
    expect(journal.get("long-1")).toMatchObject({ state: "running", attempt: 1, pid: first.child.pid });
    // It stopped for the grace period, not for the job: the job was aborted and let go, then handed back.
    const logs = first.logs();
    expect(logs).toContainEqual(expect.objectContaining({ msg: "stopping", reason: "SIGTERM", graceMs: 300 }));
    expect(logs).toContainEqual(expect.objectContaining({ msg: "job aborted by shutdown: handed back (its journal entry stays running)", jobId: "long-1" }));
    expect(logs).toContainEqual(expect.objectContaining({ msg: "unfinished jobs handed back to the control plane", handedBack: ["long-1"] }));

    startCli(["run", "--config", configDir]);
    const s2 = await waitFor(() => cp.welcomed(1), "second agent's welcome", 20_000);
    s2.sendJob({ id: "long-1", kind: "sleep", payload: { ms: 50 }, attempt: 2 });
    await waitFor(() => s2.of("job.result").length === 1, "result from the rerun");
    expect(s2.of("job.result")[0]).toMatchObject({ id: "long-1", ok: true });
    expect(journal.get("long-1")).toMatchObject({ state: "done", attempt: 2 });
  });

  it.each([
    [CLOSE.REVOKED, 3, /revoked/],
    [CLOSE.PROTOCOL_TOO_OLD, 4, /upgrade the agent/],
  ])("exits with the fatal code when closed with %i (exit %i)", async (closeCode, exitCode, words) => {
    const cp = await new ControlPlane({ onHello: () => closeCode }).start();
    const { configDir } = await enrolled(cp);
    const agent = startCli(["run", "--config", configDir]);
    const exit = await agent.exited;
    expect(exit.code).toBe(exitCode);
    expect(agent.logs().some((l) => l.level === "error" && words.test(String(l.msg)))).toBe(true);
    expect(cp.sockets).toHaveLength(1);
  });

  it("refuses to start with a host key readable by others, or when not enrolled (exit 1)", async () => {
    const cp = await new ControlPlane().start();
    const { configDir } = await enrolled(cp);
    chmodSync(join(configDir, "host-key.pem"), 0o640);
    const insecure = await runCli(["run", "--config", configDir]);
    expect(insecure.code).toBe(1);
    expect(insecure.stderr).toMatch(/host-key\.pem has mode 0640.*chmod 600/);
    expect(cp.sockets).toHaveLength(0);

    const status = await runCli(["status", "--config", configDir]);
    expect(status.code).toBe(1);
    expect(status.stdout).toMatch(/problem: .*mode 0640/);

    const notEnrolled = await runCli(["run"], { BERTH_AGENT_CONFIG: tempDir() });
    expect(notEnrolled.code).toBe(1);
    expect(notEnrolled.stderr).toMatch(/not enrolled.*berth-agent enroll/);
  });

  it("--allow-local-federation (development) refuses to start unless the proxy is on its internal CA with a storage directory (exit 1)", async () => {
    const cp = await new ControlPlane().start();
    for (const proxy of [undefined, { tls: "acme", acmeEmail: "ops@example.org", storageDir: "/var/lib/caddy" }, { tls: "internal" }]) {
      const { configDir } = await enrolled(cp, proxy ? { proxy } : {});
      const refused = await runCli(["run", "--config", configDir, "--allow-local-federation"]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/--allow-local-federation is for development: it needs the proxy on its internal CA/);
    }
    expect(cp.sockets).toHaveLength(0);
  });
});
