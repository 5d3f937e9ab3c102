// Two customers side by side on the real Docker Engine with the agent's
// iptables rules: from inside one, the other's containers, the host (its
// gateway addresses, its own address, 0.0.0.0 listeners, the proxy's admin
// port) and private addresses are unreachable, and Synapse itself refuses URL
// previews of private addresses. Then a provision killed mid-way (twice, once
// with its PostgreSQL killed too, as in a power cut) converges when rerun.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSigningKey, signingKeyFileName } from "../../../agent/homeserver/secrets.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { listHomeserverWorkloads } from "../../../agent/inventory.ts";
import { REPO_ROOT } from "../helpers.ts";
import { SYNAPSE_IMAGE, TEST_HEALTHCHECK, TestRun, dockerUsable, ensureImages, probeFrom } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver isolation tests skipped: ${unusable}`);

interface Listener {
  server: Server;
  port: number;
  connections: number;
}

function listen(host: string): Promise<Listener> {
  return new Promise((resolve, reject) => {
    const listener: Listener = { server: createServer(), port: 0, connections: 0 };
    listener.server.on("connection", (socket) => {
      listener.connections++;
      socket.destroy();
    });
    listener.server.once("error", reject);
    listener.server.listen(0, host, () => {
      listener.port = (listener.server.address() as { port: number }).port;
      resolve(listener);
    });
  });
}

function hostAddress(): string {
  for (const [name, addresses] of Object.entries(networkInterfaces())) {
    if (/^(lo|docker|br-|bhs|bdb|veth)/.test(name)) continue;
    const v4 = addresses?.find((a) => a.family === "IPv4" && !a.internal);
    if (v4) return v4.address;
  }
  throw new Error("no external IPv4 address on this host");
}

describe.skipIf(unusable)("homeserver isolation (real Docker Engine and iptables)", { timeout: 180_000 }, () => {
  let run: TestRun;
  let a: ReturnType<TestRun["spec"]>;
  let b: ReturnType<TestRun["spec"]>;
  let anywhere: Listener;
  let onGateway: Listener;
  let web = { name: "", ip: "" };
  const listeners: Listener[] = [];

  const ipOn = async (container: string, network: string) => (await run.runtime.inspectContainer(container))!.NetworkSettings.Networks[network]!.IPAddress;
  const gatewayOf = async (network: string) => (await run.runtime.inspectNetwork(network))!.gateways[0]!;

  beforeAll(async () => {
    await ensureImages();
    run = new TestRun();
    // A on a Team's resources, whose Synapse makes URL previews (a Starter's does not: config.ts, isSmallServer)
    a = run.spec("alpha", { resources: { memoryMiB: 2048, cpus: 2, storageGiB: 10 } });
    b = run.spec("bravo");
    const started = Date.now();
    await Promise.all([run.run("homeserver.provision", a), run.run("homeserver.provision", b)]);
    console.info(`two homeservers provisioned side by side in ${Date.now() - started} ms`);

    anywhere = await listen("0.0.0.0");
    onGateway = await listen(await gatewayOf(run.names(a.serverId).hsNetwork));
    listeners.push(anywhere, onGateway);

    // a private address that is not the host: a web server on a network of its own
    const network = `${run.prefix}-other`;
    await run.runtime.ensureNetwork(network, { labels: run.labels });
    web = { name: `${run.prefix}-web`, ip: "" };
    await run.runtime.createContainer({
      name: web.name,
      Image: SYNAPSE_IMAGE,
      Entrypoint: ["python", "-m", "http.server", "8080"],
      Cmd: [],
      WorkingDir: "/tmp",
      Labels: run.labels,
      HostConfig: { NetworkMode: network },
    });
    await run.runtime.startContainer(web.name);
    web.ip = await ipOn(web.name, network);
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`http://${web.ip}:8080/`)).ok) break;
      } catch {
        if (i > 50) throw new Error("the test web server did not start");
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }, 600_000);

  afterAll(async () => {
    for (const l of listeners) l.server.close();
    await run?.cleanup();
  }, 180_000);

  it("from inside customer A's Synapse: B, the host and private addresses are unreachable; A's own PostgreSQL is", async () => {
    const na = run.names(a.serverId);
    const nb = run.names(b.serverId);
    const targets: Array<[string, string, number]> = [
      ["B's Synapse", await ipOn(nb.synapse, nb.hsNetwork), 8008],
      ["B's PostgreSQL", await ipOn(nb.postgres, nb.dbNetwork), 5432],
      ["host listener on 0.0.0.0, via A's Synapse-network gateway", await gatewayOf(na.hsNetwork), anywhere.port],
      ["host listener on 0.0.0.0, via A's database-network gateway", await gatewayOf(na.dbNetwork), anywhere.port],
      ["host listener bound to A's gateway address", await gatewayOf(na.hsNetwork), onGateway.port],
      ["host listener on 0.0.0.0, via the host's own address", hostAddress(), anywhere.port],
      ["host listener on 0.0.0.0, via docker0", "172.17.0.1", anywhere.port],
      ["the proxy's admin port on the gateway", await gatewayOf(na.hsNetwork), 2019],
      ["a private address on another Docker network", web.ip, 8080],
    ];
    const control: [string, number] = [await ipOn(na.postgres, na.dbNetwork), 5432];
    const results = await probeFrom(run.runtime, na.synapse, [control, ...targets.map(([, host, port]) => [host, port] as [string, number])]);
    expect(results[0]).toBe("connected");
    const seen = Object.fromEntries(targets.map(([what, host, port], i) => [`${what} (${host}:${port})`, results[i + 1]]));
    for (const [what, result] of Object.entries(seen)) expect([what, result]).toEqual([what, "timeout"]); // dropped, not refused
    expect(anywhere.connections + onGateway.connections).toBe(0);

    // the metadata service address: never connected (dropped, or no route at all)
    const [metadata] = await probeFrom(run.runtime, na.synapse, [["169.254.169.254", 80]]);
    expect(metadata).not.toBe("connected");

    // the control: the host reaches B's Synapse (as the proxy does), and the web server
    expect((await requestJson(`http://${await ipOn(nb.synapse, nb.hsNetwork)}:8008/_matrix/client/versions`)).status).toBe(200);
    expect((await fetch(`http://${web.ip}:8080/`)).ok).toBe(true);
  });

  it("from inside customer A's PostgreSQL (internal network): nothing outside it", async () => {
    const na = run.names(a.serverId);
    const nb = run.names(b.serverId);
    const tcp = async (host: string, port: number) =>
      (await run.runtime.exec(na.postgres, ["timeout", "3", "bash", "-c", `echo > /dev/tcp/${host}/${port}`])).exitCode;
    expect(await tcp(await gatewayOf(na.dbNetwork), anywhere.port)).toBe(124); // dropped: timed out
    expect(await tcp(await ipOn(nb.postgres, nb.dbNetwork), 5432)).not.toBe(0);
    expect(await tcp(web.ip, 8080)).not.toBe(0);
    expect(await tcp(await ipOn(na.synapse, na.dbNetwork), 8008)).toBe(0); // its own Synapse, on the shared network
    expect(anywhere.connections).toBe(0);
  });

  it("Synapse refuses URL previews of private addresses itself (and nothing is contacted)", async () => {
    const na = run.names(a.serverId);
    const password = await run.registerUser(a.serverId, a.serverName, "carol");
    const { token } = await run.login(a.serverId, "carol", password);
    expect(token).toBeDefined();
    const base = await run.synapseBase(a.serverId);
    const webRequests = async () => ((await run.runtime.logs(web.name)).match(/"GET /g) ?? []).length;
    const servedBefore = await webRequests();
    for (const url of [
      `http://${await gatewayOf(na.hsNetwork)}:${anywhere.port}/`,
      `http://${web.ip}:8080/`,
      "http://169.254.169.254/latest/meta-data/",
      `http://10.11.12.13:${anywhere.port}/`,
    ]) {
      const answer = await requestJson(`${base}/_matrix/media/v3/preview_url?url=${encodeURIComponent(url)}`, { token: token!, timeoutMs: 30_000 });
      expect([url, answer.status, answer.body]).toEqual([url, 403, { errcode: "M_UNKNOWN", error: "IP address blocked" }]);
    }
    expect(anywhere.connections + onGateway.connections).toBe(0);
    expect(await webRequests()).toBe(servedBefore);
  });

  it("a Starter's Synapse makes no URL previews at all", async () => {
    const password = await run.registerUser(b.serverId, b.serverName, "dave");
    const { token } = await run.login(b.serverId, "dave", password);
    const url = `http://${web.ip}:8080/`;
    const answer = await requestJson(`${await run.synapseBase(b.serverId)}/_matrix/media/v3/preview_url?url=${encodeURIComponent(url)}`, { token: token! });
    expect([answer.status, answer.body]).toEqual([404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" }]);
  });

  it("no container has the Docker socket", async () => {
    for (const spec of [a, b]) {
      const n = run.names(spec.serverId);
      for (const name of [n.synapse, n.postgres]) {
        const info = (await run.runtime.inspectContainer(name))!;
        expect(info.Mounts.map((m) => `${m.Source}:${m.Destination}`).join(" ")).not.toMatch(/docker\.sock|containerd/);
        expect((await run.runtime.exec(name, ["sh", "-c", "test -e /var/run/docker.sock || test -e /run/docker.sock"])).exitCode).not.toBe(0);
      }
    }
  });

  it("a provision killed mid-way (agent crash; then also PostgreSQL killed) converges when rerun", async () => {
    const spec = run.spec("charlie");
    const n = run.names(spec.serverId);
    const child = (killAt: RegExp, delayMs: number, alsoKillPostgres: boolean) =>
      new Promise<string[]>((resolve, reject) => {
        const messages: string[] = [];
        const proc = spawn(process.execPath, [join(REPO_ROOT, "test", "agent", "homeserver", "provision-child.ts")], {
          cwd: REPO_ROOT,
          env: {
            ...process.env,
            BERTH_TEST_CHILD: JSON.stringify({ stateDir: run.stateDir, dataRoot: run.dataRoot, labels: run.labels, healthcheck: TEST_HEALTHCHECK, spec }),
          },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let buffer = "";
        let stderr = "";
        let killing = false;
        proc.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
        proc.stdout.on("data", (chunk: Buffer) => {
          const complete = (buffer + chunk.toString()).split("\n");
          buffer = complete.pop()!;
          for (const text of complete) {
            const line = JSON.parse(text) as { message?: string; result?: unknown };
            if (line.message) messages.push(line.message);
            if (process.env.BERTH_TEST_DEBUG) console.info(new Date().toISOString(), JSON.stringify(line).slice(0, 1000));
            if (line.result) reject(new Error("the child finished before it was killed"));
            if (!killing && line.message && killAt.test(line.message)) {
              killing = true;
              setTimeout(() => {
                proc.kill("SIGKILL");
                if (alsoKillPostgres)
                  void run.docker
                    .getContainer(n.postgres)
                    .kill()
                    .catch(() => undefined);
              }, delayMs);
            }
          }
        });
        proc.on("exit", (code, signal) => (signal === "SIGKILL" ? resolve(messages) : reject(new Error(`child exited ${code}: ${stderr}`))));
      });

    // 1. killed while PostgreSQL initialises, and PostgreSQL with it (a power cut)
    const firstRun = await child(/^starting PostgreSQL$/, 800, true);
    expect(firstRun).toContain("starting PostgreSQL");
    const secretsAfterCrash = readdirSync(run.paths(spec.serverId).secrets).map((f) => readFileSync(join(run.paths(spec.serverId).secrets, f), "utf8"));
    const keyAfterCrash = readFileSync(join(run.paths(spec.serverId).synapse, signingKeyFileName(spec.serverName)), "utf8");
    // 2. rerun killed as Synapse starts
    const secondRun = await child(/^starting Synapse$/, 0, false);
    expect(secondRun).toContain("starting Synapse");
    // 3. rerun to the end
    const started = Date.now();
    const result = (await run.run("homeserver.provision", spec)) as Record<string, unknown>;
    console.info(
      `rerun after two crashes converged in ${Date.now() - started} ms` +
        (run.captured.has("initialising it again") ? " (PostgreSQL's interrupted initialisation was started over)" : ""),
    );
    expect(result).toMatchObject({ state: "running", synapseVersion: "1.163.2", adminUserId: `@admin:${spec.serverName}` });
    const containers = await run.runtime.listContainers({ "berth.workload": spec.serverId });
    expect(containers.map((c) => c.Names[0]).sort()).toEqual([`/${n.postgres}`, `/${n.synapse}`]);
    expect((await run.runtime.listNetworks({ "berth.workload": spec.serverId })).map((x) => x.name).sort()).toEqual([n.dbNetwork, n.hsNetwork]);
    expect((await run.firewall.list(n.firewallTag)).length).toBe((await run.firewall.list(run.names(a.serverId).firewallTag)).length);
    const uids = JSON.parse(readFileSync(join(run.stateDir, "homeserver-uids.json"), "utf8")) as { servers: Record<string, number> };
    expect(Object.keys(uids.servers).sort()).toEqual([a.serverId, b.serverId, spec.serverId].sort());
    expect(new Set(Object.values(uids.servers)).size).toBe(3);
    expect(readdirSync(run.paths(spec.serverId).secrets).map((f) => readFileSync(join(run.paths(spec.serverId).secrets, f), "utf8"))).toEqual(
      secretsAfterCrash,
    );
    const key = parseSigningKey(keyAfterCrash);
    const served = await requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/key/v2/server`);
    expect((served.body as { verify_keys: Record<string, { key: string }> }).verify_keys).toEqual({ [`ed25519:${key.version}`]: { key: key.publicKey } });
    expect(existsSync(run.paths(spec.serverId).postgresInitialised)).toBe(true);
    const states = await listHomeserverWorkloads(run.runtime);
    expect(
      states
        .filter((w) => run.serverIds.has(w.id))
        .map((w) => [w.id, w.state])
        .sort(),
    ).toEqual([a.serverId, b.serverId, spec.serverId].sort().map((id) => [id, "running"]));
  });

  it("PostgreSQL data left by an interrupted first initialisation is started over", async () => {
    const spec = run.spec("delta");
    const paths = run.paths(spec.serverId);
    mkdirSync(paths.postgres, { recursive: true });
    writeFileSync(join(paths.postgres, "half-done"), "initdb died here\n"); // files, no PG_VERSION, no marker
    const result = (await run.run("homeserver.provision", spec)) as Record<string, unknown>;
    expect(result).toMatchObject({ state: "running", synapseVersion: "1.163.2" });
    expect(run.captured.has("initialising it again")).toBe(true);
    expect(existsSync(join(paths.postgres, "half-done"))).toBe(false);
    expect(existsSync(join(paths.postgres, "PG_VERSION"))).toBe(true);
    expect(existsSync(paths.postgresInitialised)).toBe(true);

    // with the marker, a broken data directory is an error, never wiped
    await run.run("homeserver.stop", { serverId: spec.serverId });
    writeFileSync(join(paths.postgres, "PG_VERSION"), "garbage\n");
    await expect(run.run("homeserver.start", { serverId: spec.serverId })).rejects.toThrow(/container \S+-postgres (keeps exiting|is exited)/);
    expect(readFileSync(join(paths.postgres, "PG_VERSION"), "utf8")).toBe("garbage\n");
  });

  it("cleanup leaves no container, network, rule or directory behind", async () => {
    const tags = [...run.serverIds].map((id) => run.names(id).firewallTag);
    await run.cleanup();
    expect(await run.docker.listContainers({ all: true, filters: { label: [`berth.test-run=${run.prefix}`] } })).toEqual([]);
    expect(await run.docker.listNetworks({ filters: { label: [`berth.test-run=${run.prefix}`] } })).toEqual([]);
    for (const tag of tags) expect(await run.firewall.list(tag)).toEqual([]);
    expect(existsSync(run.root)).toBe(false);
  });
});
