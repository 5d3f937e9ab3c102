// Shared set-up of the homeserver tests, which run against the real Docker
// Engine, iptables and the locally built images (images/build.sh, run once per
// test process; seconds when nothing changed). Every run has a unique prefix:
// its containers and networks carry the label berth.test-run=<prefix>, its
// server ids start with it, and cleanup() removes all of it, rules and
// directories included, whatever happened.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { tcpProbeScript } from "../../../agent/checks/isolation.ts";
import type { JobContext, Json } from "../../../agent/handlers/types.ts";
import { generateHostKey } from "../../../agent/credentials.ts";
import { homeserverHandlers, type HomeserverHandlerOptions } from "../../../agent/handlers/homeserver.ts";
import { HandlerRegistry } from "../../../agent/handlers/registry.ts";
import { homeserverNames, homeserverPaths } from "../../../agent/homeserver/names.ts";
import type { HomeserverProxy } from "../../../agent/homeserver/proxy.ts";
import { POSTGRES_DB, POSTGRES_USER, SECRET_FILES } from "../../../agent/homeserver/secrets.ts";
import { registerWithSharedSecret, requestJson } from "../../../agent/homeserver/synapse-api.ts";
import type { Logger } from "../../../agent/log.ts";
import { IptablesFirewall } from "../../../agent/network/firewall.ts";
import { DockerRuntime } from "../../../agent/runtime/docker.ts";
import { REPO_ROOT, captureLog, type CapturedLog } from "../helpers.ts";

export const SYNAPSE_IMAGE = "berth/synapse:latest";
export const POSTGRES_IMAGE = "berth/postgres:15";
export const TEST_RUN_LABEL = "berth.test-run";
/** Tests check health every second (the images: 10 s and 15 s); see HealthcheckOverride. */
export const TEST_HEALTHCHECK = { intervalMs: 1_000, startPeriodMs: 60_000 };

/** Can these tests run here: root, and a Docker daemon answering? */
export async function dockerUsable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return "not root (the tests chown data directories and change iptables)";
  try {
    await new Docker({ socketPath: "/var/run/docker.sock" }).ping();
    return undefined;
  } catch (error) {
    return `the Docker daemon does not answer: ${(error as Error).message}`;
  }
}

/** Runs a command to its end: its exit code and output (never rejects for a non-zero exit). */
export function runCommand(command: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      resolve({ code, stdout, stderr: stderr || (error && typeof error.code !== "number" ? String(error) : "") });
    });
  });
}

let images: Promise<void> | undefined;

/** Builds berth/synapse and berth/postgres unless present and current (images/build.sh caches). */
export function ensureImages(): Promise<void> {
  images ??= new Promise<void>((resolve, reject) => {
    execFile(
      "bash",
      [join(REPO_ROOT, "images", "build.sh")],
      { cwd: REPO_ROOT, timeout: 15 * 60_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`images/build.sh failed: ${error.message}\n${stdout}\n${stderr}`));
        else resolve();
      },
    );
  });
  return images;
}

export interface ProxyCall {
  op: "route" | "suspend" | "remove";
  serverName: string;
  upstream?: { host: string; port: number };
  limits?: { maxBodyBytes: number };
}

/** The proxy as the handlers see it, in memory. */
export class FakeProxy implements HomeserverProxy {
  readonly calls: ProxyCall[] = [];
  readonly state = new Map<string, { host: string; port: number } | "suspended">();

  async route(serverName: string, upstream: { host: string; port: number }, limits: { maxBodyBytes: number }): Promise<void> {
    this.calls.push({ op: "route", serverName, upstream, limits });
    this.state.set(serverName, upstream);
  }

  async suspend(serverName: string): Promise<void> {
    this.calls.push({ op: "suspend", serverName });
    this.state.set(serverName, "suspended");
  }

  async remove(serverName: string): Promise<void> {
    this.calls.push({ op: "remove", serverName });
    this.state.delete(serverName);
  }
}

export interface Progress {
  progress: number;
  message?: string;
}

export class TestRun {
  readonly prefix = `t${randomBytes(4).toString("hex")}`;
  readonly root = mkdtempSync(join(tmpdir(), "berth-hs-test-"));
  readonly dataRoot = join(this.root, "data");
  readonly stateDir = join(this.root, "state");
  readonly docker = new Docker({ socketPath: "/var/run/docker.sock" });
  readonly runtime = new DockerRuntime({ docker: this.docker });
  readonly firewall = new IptablesFirewall();
  readonly proxy = new FakeProxy();
  readonly captured: CapturedLog = captureLog();
  readonly progress: Progress[] = [];
  readonly passwords: string[] = [];
  readonly serverIds = new Set<string>();
  readonly images = new Set<string>();
  readonly labels: Record<string, string> = { [TEST_RUN_LABEL]: this.prefix };
  /** The host identity backup transfers are signed with. */
  readonly agentIdentity = { hostId: `${this.prefix}-host`, privateKey: generateHostKey() };
  handlers: ReturnType<typeof homeserverHandlers>["handlers"];
  manager: ReturnType<typeof homeserverHandlers>["manager"];
  /** The agent's host namespace, when the run plays one of several agents on this Docker Engine. */
  readonly hostNamespace: string | undefined;

  constructor(options: Partial<HomeserverHandlerOptions> = {}) {
    this.hostNamespace = options.hostNamespace;
    const built = homeserverHandlers(this.handlerOptions(options));
    this.handlers = built.handlers;
    this.manager = built.manager;
  }

  handlerOptions(options: Partial<HomeserverHandlerOptions> = {}): HomeserverHandlerOptions {
    return {
      stateDir: this.stateDir,
      runtime: this.runtime,
      firewall: this.firewall,
      proxy: this.proxy,
      log: this.captured.log,
      healthcheck: TEST_HEALTHCHECK,
      trustedKeyServers: [], // no Internet here
      extraLabels: this.labels,
      randomPassword: () => {
        const password = `pw-${randomBytes(24).toString("base64url")}`;
        this.passwords.push(password);
        return password;
      },
      diskEncryption: () => ({ dataRoot: this.dataRoot, encrypted: false, devices: ["test"], allowUnencrypted: true }),
      agentIdentity: this.agentIdentity,
      ...options,
    };
  }

  serverId(name: string): string {
    const id = `${this.prefix}-${name}`;
    this.serverIds.add(id);
    return id;
  }

  spec(name: string, overrides: Record<string, unknown> = {}) {
    const serverId = this.serverId(name);
    const serverName = `${name}.${this.prefix}.test`;
    return {
      serverId,
      name,
      serverName,
      publicBaseUrl: `https://${serverName}/`,
      resources: { memoryMiB: 1024, cpus: 1, storageGiB: 10 },
      images: { synapse: SYNAPSE_IMAGE, postgres: POSTGRES_IMAGE },
      ...overrides,
    };
  }

  ctx(kind = "test", log: Logger = this.captured.log, signal: AbortSignal = new AbortController().signal): JobContext {
    return {
      progress: (progress, message) => void this.progress.push({ progress, ...(message === undefined ? {} : { message }) }),
      signal,
      dataRoot: this.dataRoot,
      log,
      job: { id: `job-${randomBytes(4).toString("hex")}`, kind, attempt: 1, deadline: Date.now() + 600_000 },
    };
  }

  /** Runs a job as the agent's runner does: through the registry, which checks the payload and the result against the catalogue. */
  async run(kind: keyof TestRun["handlers"], payload: unknown): Promise<Json> {
    return new HandlerRegistry().registerAll(this.handlers).get(kind)!(payload as Json, this.ctx(kind));
  }

  names(serverId: string) {
    return homeserverNames(serverId, this.hostNamespace);
  }

  paths(serverId: string) {
    return homeserverPaths(this.dataRoot, serverId);
  }

  /** A query's rows (psql -A -t) in the server's database, as Synapse's user; throws when psql fails. */
  async sql(serverId: string, query: string): Promise<string> {
    const result = await this.runtime.exec(
      this.names(serverId).postgres,
      ["psql", "-h", "/run/postgresql", "-U", POSTGRES_USER, "-d", POSTGRES_DB, "-X", "-A", "-t", "-q"],
      {
        stdin: query,
        env: ["PGPASSFILE=/run/secrets/pgpass"],
        timeoutMs: 30_000,
      },
    );
    if (result.exitCode !== 0) throw new Error(`psql failed: ${result.stderr.trim()}`);
    return result.stdout.trim();
  }

  registrationSecret(serverId: string): string {
    return readFileSync(join(this.paths(serverId).secrets, SECRET_FILES.registrationSharedSecret), "utf8").trim();
  }

  /** Synapse's address on its -hs network, from the host. */
  async synapseBase(serverId: string): Promise<string> {
    const names = this.names(serverId);
    const info = await this.runtime.inspectContainer(names.synapse);
    const ip = info?.NetworkSettings.Networks[names.hsNetwork]?.IPAddress;
    if (!ip) throw new Error(`no address for ${names.synapse}`);
    return `http://${ip}:8008`;
  }

  /** Registers a user (shared secret) and returns its password. */
  async registerUser(serverId: string, serverName: string, localpart: string): Promise<string> {
    const password = `user-${randomBytes(12).toString("hex")}`;
    const outcome = await registerWithSharedSecret(await this.synapseBase(serverId), this.registrationSecret(serverId), {
      localpart,
      password,
      admin: false,
      serverName,
    });
    if (!outcome.created) throw new Error(`${localpart} exists already`);
    return password;
  }

  /** A password log-in (waiting out Synapse's log-in rate limit: the tests log in often). */
  async login(serverId: string, user: string, password: string): Promise<{ status: number; token?: string; body: unknown }> {
    let answer: Awaited<ReturnType<typeof requestJson>>;
    for (let attempt = 0; ; attempt++) {
      answer = await requestJson(`${await this.synapseBase(serverId)}/_matrix/client/v3/login`, {
        method: "POST",
        body: { type: "m.login.password", identifier: { type: "m.id.user", user }, password },
      });
      if (answer.status !== 429 || attempt >= 10) break;
      await new Promise((resolve) => setTimeout(resolve, Number((answer.body as { retry_after_ms?: number }).retry_after_ms ?? 1_000)));
    }
    const token = (answer.body as { access_token?: string } | null)?.access_token;
    return { status: answer.status, body: answer.body, ...(token ? { token } : {}) };
  }

  /** A room `token`'s user creates, with one text message of theirs in it: the room's id. */
  async roomWithMessage(serverId: string, token: string, message: string, preset = "public_chat"): Promise<string> {
    const base = await this.synapseBase(serverId);
    const room = await requestJson(`${base}/_matrix/client/v3/createRoom`, { method: "POST", token, body: { preset } });
    const roomId = (room.body as { room_id?: string }).room_id;
    if (!roomId) throw new Error(`creating a room answered ${room.status}`);
    const sent = await requestJson(`${base}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t1`, {
      method: "PUT",
      token,
      body: { msgtype: "m.text", body: message },
    });
    if (sent.status !== 200) throw new Error(`sending the message answered ${sent.status}`);
    return roomId;
  }

  /** Media `token`'s user uploads: its mxc:// URI. */
  async uploadMedia(serverId: string, token: string, bytes: Buffer, filename = "upload.bin"): Promise<string> {
    const uploaded = await fetch(`${await this.synapseBase(serverId)}/_matrix/media/v3/upload?filename=${encodeURIComponent(filename)}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream" },
      body: bytes,
    });
    if (uploaded.status !== 200) throw new Error(`uploading media answered ${uploaded.status}`);
    return ((await uploaded.json()) as { content_uri: string }).content_uri;
  }

  /** Builds a tiny image FROM berth/synapse with `dockerfileBody` (classic builder, no registry). */
  async buildImage(tag: string, dockerfileBody: string): Promise<string> {
    const ref = `berth-test/synapse:${this.prefix}-${tag}`;
    const dir = mkdtempSync(join(tmpdir(), "berth-hs-image-"));
    try {
      writeFileSync(join(dir, "Dockerfile"), `FROM ${SYNAPSE_IMAGE}\nLABEL ${TEST_RUN_LABEL}=${this.prefix}\n${dockerfileBody}\n`);
      const stream = await this.docker.buildImage({ context: dir, src: ["Dockerfile"] }, {
        t: ref,
        rm: true,
        forcerm: true,
        pull: "false",
      } as unknown as Docker.ImageBuildOptions);
      const output = await new Promise<Array<{ error?: string }>>((resolve, reject) => {
        this.docker.modem.followProgress(stream, (error: Error | null, result: Array<{ error?: string }>) => (error ? reject(error) : resolve(result)));
      });
      const failed = output.find((o) => o.error);
      if (failed) throw new Error(`building ${ref} failed: ${failed.error}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    this.images.add(ref);
    return ref;
  }

  /** Everything this run made: containers, networks, firewall rules, images, directories. */
  async cleanup(): Promise<void> {
    const filter = { label: [`${TEST_RUN_LABEL}=${this.prefix}`] };
    for (const c of await this.docker.listContainers({ all: true, filters: filter }).catch(() => [])) {
      await this.docker
        .getContainer(c.Id)
        .remove({ force: true })
        .catch(() => undefined);
    }
    for (const n of await this.docker.listNetworks({ filters: filter }).catch(() => [])) {
      await this.docker
        .getNetwork(n.Id)
        .remove()
        .catch(() => undefined);
    }
    for (const serverId of this.serverIds) {
      const names = this.names(serverId);
      await this.firewall.remove({ chainId: names.chainId, tag: names.firewallTag }).catch(() => undefined);
    }
    for (const ref of this.images)
      await this.docker
        .getImage(ref)
        .remove({ force: true })
        .catch(() => undefined);
    await unmountUnder(this.root);
    rmSync(this.root, { recursive: true, force: true });
  }

  /** Every text a secret could have leaked into: logs, progress, and the containers' output and config. */
  async everythingSaid(serverId: string, extra: unknown[] = []): Promise<string> {
    const names = this.names(serverId);
    const parts: string[] = [JSON.stringify(this.captured.lines), JSON.stringify(this.progress), JSON.stringify(extra)];
    for (const name of [names.synapse, names.postgres]) {
      parts.push(await this.runtime.logs(name, 100_000));
      parts.push(JSON.stringify(await this.runtime.inspectContainer(name)));
    }
    return parts.join("\n");
  }
}

/** Unmounts every filesystem mounted under `dir` (homeservers' storage quotas, releasing their loop devices), deepest first: else deleting `dir` fails EBUSY. */
export async function unmountUnder(dir: string): Promise<void> {
  const mountpoints = readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[1]?.replace(/\\040/g, " "))
    .filter((mountpoint): mountpoint is string => mountpoint?.startsWith(`${dir}/`) ?? false);
  for (const mountpoint of mountpoints.sort((a, b) => b.length - a.length)) await runCommand("umount", [mountpoint]);
}

/** Tries TCP connections from inside a running container (tcpProbeScript), all at once. */
export async function probeFrom(runtime: DockerRuntime, container: string, targets: Array<[string, number]>, timeoutSeconds = 3): Promise<string[]> {
  const script = tcpProbeScript(timeoutSeconds);
  const result = await runtime.exec(container, ["python", "-c", script, JSON.stringify(targets)], { timeoutMs: 60_000 });
  if (result.exitCode !== 0) throw new Error(`probe failed: ${result.stderr}`);
  return JSON.parse(result.stdout.trim()) as string[];
}

export interface RegisterAnswer {
  status: number;
  body: {
    session?: string;
    flows?: Array<{ stages: string[] }>;
    completed?: string[];
    access_token?: string;
    user_id?: string;
    errcode?: string;
    error?: string;
  };
}

/** One request to Synapse's client registration (POST /_matrix/client/v3/register). */
export async function registerClient(base: string, body: Record<string, unknown>): Promise<RegisterAnswer> {
  return (await requestJson(`${base}/_matrix/client/v3/register`, { method: "POST", body })) as RegisterAnswer;
}

/** Synapse's user-interactive registration, as a client does it: each stage of the token flow in turn. */
export async function registerClientWithToken(base: string, username: string, token: string): Promise<RegisterAnswer> {
  const password = `pw-${username}-registered`;
  let answer = await registerClient(base, { username, password });
  for (let stage = 0; answer.status === 401 && stage < 4; stage++) {
    const flow = answer.body.flows?.find((f) => f.stages.includes("m.login.registration_token"));
    const next = flow?.stages.find((s) => !(answer.body.completed ?? []).includes(s));
    if (!flow || !next || !answer.body.session) return answer;
    const auth = next === "m.login.registration_token" ? { type: next, token, session: answer.body.session } : { type: next, session: answer.body.session };
    answer = await registerClient(base, { username, password, auth });
  }
  return answer;
}
