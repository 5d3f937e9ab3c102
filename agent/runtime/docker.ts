// A small wrapper over the Docker Engine API (dockerode) for the homeserver
// runtime: networks, containers, health, exec, images. Never the docker CLI.
// Calls that find things already in the wanted state (start a running
// container, stop a stopped one, remove a missing one) succeed quietly, so the
// handlers built on it can be rerun after a crash.
import { PassThrough, Transform, type Readable, type TransformCallback } from "node:stream";
import Docker from "dockerode";
import { errorMessage, silentLogger, type Logger } from "../log.ts";
import { delay } from "./delay.ts";

/** Re-exported for the modules that import it from here. */
export { delay };

export const DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock";

export interface DockerRuntimeOptions {
  /** Default /var/run/docker.sock. */
  socketPath?: string;
  /** An existing client (tests); wins over socketPath. */
  docker?: Docker;
  /**
   * Pull images that are not on the host. Off by default: an image the host
   * lacks is an error ("image X is not on this host"), so what runs is exactly
   * what an operator put there. Turn on in production to let jobs pull.
   */
  pullImages?: boolean;
  log?: Logger;
}

export class ImageMissingError extends Error {
  override name = "ImageMissingError";
}

export class ContainerFailedError extends Error {
  override name = "ContainerFailedError";
}

export class HealthTimeoutError extends Error {
  override name = "HealthTimeoutError";
}

export interface NetworkInfo {
  id: string;
  name: string;
  internal: boolean;
  /** The host side of the bridge (an interface name). */
  bridge: string;
  subnets: string[];
  gateways: string[];
}

export interface EnsureNetworkOptions {
  /** No route out (Docker's --internal). */
  internal?: boolean;
  /** Name of the bridge interface (max 15 characters); Docker's default is br-<id>. */
  bridgeName?: string;
  labels?: Record<string, string>;
}

export interface ExecOptions {
  /** Written to the process's standard input, then closed (keeps secrets out of argv). */
  stdin?: string | Buffer;
  env?: string[];
  user?: string;
  timeoutMs?: number;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface WaitHealthyOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  pollMs?: number;
  /**
   * The healthcheck's own test, run by the caller: a running container that
   * passes it counts as healthy without waiting for Docker's next check (whose
   * interval, on Docker before 25 without start_interval, is also the earliest
   * a new container can turn healthy). Failures are still judged by Docker's.
   */
  ready?: () => Promise<boolean>;
}

type DockerError = Error & { statusCode?: number; json?: { message?: string } };

function statusOf(error: unknown): number | undefined {
  return (error as DockerError | undefined)?.statusCode;
}

/** The Docker daemon's message of an API error (dockerode's own message repeats the HTTP status). */
export function dockerMessage(error: unknown): string {
  const json = (error as DockerError | undefined)?.json;
  return typeof json?.message === "string" ? json.message : errorMessage(error);
}

export class DockerRuntime {
  readonly docker: Docker;
  readonly pullImages: boolean;
  private readonly log: Logger;

  constructor(options: DockerRuntimeOptions = {}) {
    this.docker = options.docker ?? new Docker({ socketPath: options.socketPath ?? DEFAULT_DOCKER_SOCKET });
    this.pullImages = options.pullImages ?? false;
    this.log = options.log ?? silentLogger;
  }

  // ---------- images ----------

  async hasImage(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).inspect();
      return true;
    } catch (error) {
      if (statusOf(error) === 404) return false;
      throw error;
    }
  }

  /** Labels of a local image (undefined when it is not on the host). */
  async imageLabels(ref: string): Promise<Record<string, string> | undefined> {
    try {
      const info = await this.docker.getImage(ref).inspect();
      return (info.Config?.Labels as Record<string, string> | null | undefined) ?? {};
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  /** Makes sure `ref` is on the host: pulls it when pulling is on, else fails clearly. */
  async ensureImage(ref: string, signal?: AbortSignal): Promise<void> {
    if (await this.hasImage(ref)) return;
    if (!this.pullImages) {
      throw new ImageMissingError(
        `image ${ref} is not on this host (this agent does not pull images: load or build it on the host, or set "pullImages": true in agent.json)`,
      );
    }
    this.log.info("pulling image", { image: ref });
    const stream = (await this.docker.pull(ref, { abortSignal: signal })) as NodeJS.ReadableStream;
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(stream, (error: Error | null) => (error ? reject(error) : resolve()));
    });
    if (!(await this.hasImage(ref))) throw new ImageMissingError(`image ${ref} is not on this host after pulling it`);
  }

  // ---------- networks ----------

  async inspectNetwork(name: string): Promise<NetworkInfo | undefined> {
    try {
      return networkInfo(await this.docker.getNetwork(name).inspect());
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  /** Creates the bridge network unless it exists; an existing one must have the same `internal` setting. */
  async ensureNetwork(name: string, options: EnsureNetworkOptions = {}): Promise<NetworkInfo> {
    const internal = options.internal ?? false;
    let existing = await this.inspectNetwork(name);
    if (!existing) {
      try {
        await this.docker.createNetwork({
          Name: name,
          CheckDuplicate: true,
          Driver: "bridge",
          Internal: internal,
          EnableIPv6: false,
          Labels: options.labels ?? {},
          Options: options.bridgeName ? { "com.docker.network.bridge.name": options.bridgeName } : {},
        });
      } catch (error) {
        if (statusOf(error) !== 409) throw new Error(`cannot create network ${name}: ${dockerMessage(error)}`);
        // created meanwhile (a concurrent rerun): use it
      }
      existing = await this.inspectNetwork(name);
      if (!existing) throw new Error(`network ${name} vanished right after it was created`);
    }
    if (existing.internal !== internal) {
      throw new Error(`network ${name} exists but is ${existing.internal ? "" : "not "}internal; remove it to let the agent recreate it`);
    }
    return existing;
  }

  async removeNetwork(name: string): Promise<boolean> {
    try {
      await this.docker.getNetwork(name).remove();
      return true;
    } catch (error) {
      if (statusOf(error) === 404) return false;
      throw error;
    }
  }

  async listNetworks(labels: Record<string, string | true> = {}): Promise<NetworkInfo[]> {
    const label = labelFilter(labels);
    const list = await this.docker.listNetworks(label.length ? { filters: { label } } : {});
    return list.map((n) => networkInfo(n));
  }

  /** Every subnet of every Docker network on this host (the address pools in use). */
  async networkSubnets(): Promise<string[]> {
    const all = new Set<string>();
    for (const network of await this.docker.listNetworks()) {
      for (const config of network.IPAM?.Config ?? []) if (config.Subnet) all.add(config.Subnet);
    }
    return [...all].sort();
  }

  async connectNetwork(network: string, container: string, aliases: string[] = []): Promise<void> {
    try {
      await this.docker.getNetwork(network).connect({ Container: container, EndpointConfig: aliases.length ? { Aliases: aliases } : {} });
    } catch (error) {
      // "endpoint with name … already exists in network …" (403 on older engines, 409 on newer)
      if ((statusOf(error) === 403 || statusOf(error) === 409) && /already exists/i.test(dockerMessage(error))) return;
      throw new Error(`cannot connect ${container} to network ${network}: ${dockerMessage(error)}`);
    }
  }

  // ---------- containers ----------

  async inspectContainer(name: string): Promise<Docker.ContainerInspectInfo | undefined> {
    try {
      return await this.docker.getContainer(name).inspect();
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  async createContainer(options: Docker.ContainerCreateOptions): Promise<string> {
    try {
      const container = await this.docker.createContainer(options);
      return container.id;
    } catch (error) {
      throw new Error(`cannot create container ${options.name ?? ""}: ${dockerMessage(error)}`);
    }
  }

  /** Starts it; a running container is left alone. */
  async startContainer(name: string): Promise<void> {
    try {
      await this.docker.getContainer(name).start();
    } catch (error) {
      if (statusOf(error) === 304) return;
      throw new Error(`cannot start container ${name}: ${dockerMessage(error)}`);
    }
  }

  /** Stops it (SIGTERM or the image's stop signal, then SIGKILL after `timeoutSeconds`); a stopped or missing one is fine. */
  async stopContainer(name: string, timeoutSeconds = 30): Promise<void> {
    try {
      await this.docker.getContainer(name).stop({ t: timeoutSeconds });
    } catch (error) {
      if (statusOf(error) === 304 || statusOf(error) === 404) return;
      throw new Error(`cannot stop container ${name}: ${dockerMessage(error)}`);
    }
  }

  /**
   * Changes a container's memory and CPU limits in place (running or not: no restart).
   * Returns false when there is no such container.
   */
  async updateContainerLimits(name: string, limits: { memoryMiB: number; cpus: number }): Promise<boolean> {
    const memory = Math.round(limits.memoryMiB * 2 ** 20);
    try {
      // MemorySwap equal to Memory: no swap beyond the limit, as at creation.
      await this.docker.getContainer(name).update({ Memory: memory, MemorySwap: memory, NanoCpus: Math.round(limits.cpus * 1e9) });
      return true;
    } catch (error) {
      if (statusOf(error) === 404) return false;
      throw new Error(`cannot change the limits of container ${name}: ${dockerMessage(error)}`);
    }
  }

  async restartContainer(name: string, timeoutSeconds = 30): Promise<void> {
    try {
      await this.docker.getContainer(name).restart({ t: timeoutSeconds });
    } catch (error) {
      throw new Error(`cannot restart container ${name}: ${dockerMessage(error)}`);
    }
  }

  /** Removes it (force: even while running); a missing container is fine. Returns whether it existed. */
  async removeContainer(name: string, options: { force?: boolean } = {}): Promise<boolean> {
    try {
      await this.docker.getContainer(name).remove({ force: options.force ?? false, v: false });
      return true;
    } catch (error) {
      if (statusOf(error) === 404) return false;
      // 409 "removal already in progress": wait for it to finish
      if (statusOf(error) === 409 && /already in progress/i.test(dockerMessage(error))) {
        for (let i = 0; i < 50 && (await this.inspectContainer(name)); i++) await delay(100);
        return true;
      }
      throw new Error(`cannot remove container ${name}: ${dockerMessage(error)}`);
    }
  }

  /**
   * A one-off container (a tool's run): created, started, waited for and removed, whatever
   * happens; its exit code and the tail of its output. Aborting `signal` kills it.
   */
  async runToCompletion(options: Docker.ContainerCreateOptions & { name: string }, signal: AbortSignal): Promise<{ exitCode: number; output: string }> {
    await this.removeContainer(options.name, { force: true }); // a run an agent restart left behind
    await this.createContainer(options);
    const kill = () => void this.removeContainer(options.name, { force: true }).catch(() => undefined);
    signal.addEventListener("abort", kill, { once: true });
    try {
      const container = this.docker.getContainer(options.name);
      await container.start();
      const { StatusCode } = (await container.wait()) as { StatusCode: number };
      signal.throwIfAborted();
      return { exitCode: StatusCode, output: await this.logs(options.name, 40) };
    } finally {
      signal.removeEventListener("abort", kill);
      await this.removeContainer(options.name, { force: true });
    }
  }

  async renameContainer(name: string, newName: string): Promise<void> {
    try {
      await this.docker.getContainer(name).rename({ name: newName });
    } catch (error) {
      throw new Error(`cannot rename container ${name} to ${newName}: ${dockerMessage(error)}`);
    }
  }

  /** Containers (running or not) carrying all of `labels` (a value of `true` means: the label is present). */
  async listContainers(labels: Record<string, string | true>): Promise<Docker.ContainerInfo[]> {
    return this.docker.listContainers({ all: true, filters: { label: labelFilter(labels) } });
  }

  /** The last lines of a container's output (both streams). */
  async logs(name: string, tail = 50): Promise<string> {
    try {
      const buffer = (await this.docker.getContainer(name).logs({ stdout: true, stderr: true, tail, follow: false })) as unknown as Buffer;
      return demuxBuffer(buffer);
    } catch (error) {
      if (statusOf(error) === 404) return "";
      throw error;
    }
  }

  /**
   * Waits until the container's Docker healthcheck reports "healthy". Fails at
   * once when the container exits, restarts or turns "unhealthy", and after
   * `timeoutMs` otherwise. A container without a healthcheck counts as healthy
   * when running.
   */
  async waitHealthy(name: string, options: WaitHealthyOptions): Promise<void> {
    const started = Date.now();
    const pollMs = options.pollMs ?? 500;
    let restartCount: number | undefined;
    let crashedAgain = 0;
    for (;;) {
      options.signal?.throwIfAborted();
      const info = await this.inspectContainer(name);
      if (!info) throw new ContainerFailedError(`container ${name} does not exist`);
      const state = info.State;
      restartCount ??= info.RestartCount;
      const health = state.Health?.Status;
      if (state.Running && !state.Restarting && (health === "healthy" || (health === undefined && !info.Config.Healthcheck))) return;
      if (state.Running && !state.Restarting && health !== "unhealthy" && options.ready && (await options.ready().catch(() => false))) return;
      if (info.RestartCount > restartCount && state.Running && !state.Restarting && !crashedAgain) {
        // Restarted already: its exit code is gone until it exits again, which a crash loop does soon.
        crashedAgain = Date.now() + 5_000;
      }
      const waitingForExitCode = crashedAgain > 0 && Date.now() < crashedAgain && state.Running && !state.Restarting;
      if (!waitingForExitCode && (state.Restarting || info.RestartCount > restartCount || (!state.Running && state.Status !== "created"))) {
        throw new ContainerFailedError(
          `container ${name} ${state.Restarting || info.RestartCount > restartCount ? "keeps exiting" : `is ${state.Status}`} (exit code ${state.ExitCode}${state.OOMKilled ? ", killed for running out of memory" : ""}${state.Error ? `, ${state.Error}` : ""})`,
        );
      }
      if (health === "unhealthy") {
        throw new ContainerFailedError(`container ${name} is unhealthy: ${lastHealthOutput(info)}`);
      }
      const elapsed = Date.now() - started;
      if (elapsed >= options.timeoutMs) {
        throw new HealthTimeoutError(
          `container ${name} did not become healthy within ${Math.round(options.timeoutMs / 1000)} s (health: ${health ?? state.Status}${state.Health?.Log?.length ? `; last check: ${lastHealthOutput(info)}` : ""})`,
        );
      }
      await delay(Math.min(crashedAgain ? 50 : pollMs, options.timeoutMs - elapsed), options.signal);
    }
  }

  /**
   * Runs a command in a running container with its output streamed (pg_dump)
   * and, optionally, its standard input fed from a stream (pg_restore): for
   * data too big to hold in memory.
   */
  async execStreaming(name: string, cmd: string[], options: { stdin?: Readable; env?: string[]; user?: string } = {}): Promise<StreamingExec> {
    const exec = await this.docker.getContainer(name).exec({
      Cmd: cmd,
      AttachStdin: options.stdin !== undefined,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      ...(options.env ? { Env: options.env } : {}),
      ...(options.user ? { User: options.user } : {}),
    });
    const raw = (await exec.start({ hijack: true, stdin: options.stdin !== undefined })) as NodeJS.ReadWriteStream & Readable;
    const stdout = new ExecStdout();
    raw.pipe(stdout);
    raw.on("error", (error) => stdout.destroy(error));
    if (options.stdin) {
      options.stdin.on("error", (error) => stdout.destroy(error));
      options.stdin.pipe(raw);
    }
    const finished = new Promise<{ exitCode: number; stderr: string }>((resolve, reject) => {
      stdout.on("error", reject);
      stdout.on("end", () => {
        void (async () => {
          for (let i = 0; i < 100; i++) {
            const info = await exec.inspect();
            if (!info.Running) return resolve({ exitCode: info.ExitCode ?? -1, stderr: stdout.stderr });
            await delay(20);
          }
          resolve({ exitCode: -1, stderr: stdout.stderr });
        })().catch(reject);
      });
    });
    // The caller learns of failures through `finished` and the stream's own error.
    finished.catch(() => undefined);
    return { stdout, finished };
  }

  /** Runs a command in a running container and collects its output. */
  async exec(name: string, cmd: string[], options: ExecOptions = {}): Promise<ExecResult> {
    const container = this.docker.getContainer(name);
    const hasStdin = options.stdin !== undefined;
    const exec = await container.exec({
      Cmd: cmd,
      AttachStdin: hasStdin,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      ...(options.env ? { Env: options.env } : {}),
      ...(options.user ? { User: options.user } : {}),
    });
    const stream = (await exec.start({ hijack: true, stdin: hasStdin })) as NodeJS.ReadWriteStream & { destroy(): void };
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    stdout.on("data", (chunk: Buffer) => out.push(chunk));
    stderr.on("data", (chunk: Buffer) => err.push(chunk));
    this.docker.modem.demuxStream(stream, stdout, stderr);
    const finished = new Promise<void>((resolve, reject) => {
      stream.on("end", resolve);
      stream.on("close", resolve);
      stream.on("error", reject);
    });
    if (options.stdin !== undefined) stream.end(options.stdin);
    const timeoutMs = options.timeoutMs ?? 60_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    try {
      if ((await Promise.race([finished, timedOut])) === "timeout") {
        stream.destroy();
        throw new Error(`command in ${name} did not finish within ${Math.round(timeoutMs / 1000)} s`);
      }
    } finally {
      clearTimeout(timer);
    }
    let exitCode: number | null = null;
    for (let i = 0; i < 50; i++) {
      const info = await exec.inspect();
      if (!info.Running) {
        exitCode = info.ExitCode;
        break;
      }
      await delay(20);
    }
    return { exitCode: exitCode ?? -1, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") };
  }
}

/**
 * Docker's multiplexed exec output (8-byte frame headers: stream 1 = stdout,
 * 2 = stderr, then a big-endian length) as a stream of stdout bytes, with
 * backpressure; stderr is kept (its last 64 KiB) for error messages.
 */
export class ExecStdout extends Transform {
  private pending = Buffer.alloc(0);
  private stderrChunks: Buffer[] = [];
  private stderrBytes = 0;

  get stderr(): string {
    return Buffer.concat(this.stderrChunks).toString("utf8");
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    while (this.pending.length >= 8) {
      const size = this.pending.readUInt32BE(4);
      if (this.pending.length < 8 + size) break;
      const payload = this.pending.subarray(8, 8 + size);
      if (this.pending[0] === 2) this.keepStderr(payload);
      else this.push(payload);
      this.pending = this.pending.subarray(8 + size);
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    done(this.pending.length ? new Error(`exec output ended inside a frame (${this.pending.length} bytes left)`) : null);
  }

  private keepStderr(payload: Buffer): void {
    this.stderrChunks.push(Buffer.from(payload));
    this.stderrBytes += payload.length;
    while (this.stderrBytes > 65_536 && this.stderrChunks.length > 1) this.stderrBytes -= this.stderrChunks.shift()!.length;
  }
}

export interface StreamingExec {
  /** The command's standard output, as it comes (read it, or the command stalls). */
  stdout: Readable;
  /** Settles once the command exited and its output was read: its exit code and the end of its stderr. */
  finished: Promise<{ exitCode: number; stderr: string }>;
}

// ---------- helpers ----------

export function networkInfo(network: Docker.NetworkInspectInfo): NetworkInfo {
  const configs = network.IPAM?.Config ?? [];
  return {
    id: network.Id,
    name: network.Name,
    internal: network.Internal,
    bridge: network.Options?.["com.docker.network.bridge.name"] ?? `br-${network.Id.slice(0, 12)}`,
    subnets: configs.map((c) => c.Subnet).filter((s): s is string => Boolean(s)),
    gateways: configs.map((c) => c.Gateway).filter((s): s is string => Boolean(s)),
  };
}

function labelFilter(labels: Record<string, string | true>): string[] {
  return Object.entries(labels).map(([key, value]) => (value === true ? key : `${key}=${value}`));
}

function lastHealthOutput(info: Docker.ContainerInspectInfo): string {
  const log = info.State.Health?.Log ?? [];
  const last = log[log.length - 1];
  if (!last) return "no check ran yet";
  const output = last.Output.trim().replace(/\s+/g, " ");
  return `exit code ${last.ExitCode}${output ? `, ${output.slice(0, 300)}` : ""}`;
}

/** Docker's multiplexed log/attach format (8-byte frame headers) to text; plain text passes through. */
export function demuxBuffer(buffer: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= buffer.length) {
    const type = buffer[offset];
    const size = buffer.readUInt32BE(offset + 4);
    if ((type !== 0 && type !== 1 && type !== 2) || buffer[offset + 1] !== 0 || offset + 8 + size > buffer.length) {
      return buffer.toString("utf8"); // not multiplexed (a TTY container)
    }
    parts.push(buffer.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  return Buffer.concat(parts).toString("utf8");
}
