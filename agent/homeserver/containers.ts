// The two containers of a homeserver, as Docker Engine API create options:
// hardened per images/README.md ("run-time contract"), limited per the plan.
import { createHash } from "node:crypto";
import type Docker from "dockerode";
import { SYNAPSE_DATA } from "./config.ts";
import {
  HOMESERVER_KIND,
  KIND_LABEL,
  ROLE_LABEL,
  SERVER_NAME_LABEL,
  SPEC_HASH_LABEL,
  WORKLOAD_LABEL,
  type HomeserverNames,
  type HomeserverPaths,
  type Role,
} from "./names.ts";
import { POSTGRES_DB, POSTGRES_USER, SECRET_FILES } from "./secrets.ts";
import { jemallocConfig, postgresSettings } from "./tuning.ts";
import { SYNAPSE_MODULES_DIR } from "./user-limit-module.ts";

export interface PlanResources {
  memoryMiB: number;
  cpus: number;
  storageGiB: number;
}

export interface ContainerResources {
  memoryMiB: number;
  cpus: number;
}

export interface ResourceSplit {
  synapse: ContainerResources;
  postgres: ContainerResources;
}

/**
 * The plan's memory and CPUs shared between the two containers, each with its
 * own hard limit (what one of them does can never starve the other):
 *
 * - memory: PostgreSQL a quarter (at least 128 MiB: shared_buffers, the
 *   pool's backends; tuning.ts sizes both from it), Synapse the rest (at least 256 MiB). Synapse holds the caches
 *   and the per-request state; PostgreSQL leans on the host's page cache,
 *   which is not counted against the limit the same way.
 * - CPU: Synapse two thirds, PostgreSQL one third (at least 0.1 CPU each).
 *
 * The two add up to the plan, except for plans below the minimums.
 */
export function splitResources(plan: Pick<PlanResources, "memoryMiB" | "cpus">): ResourceSplit {
  const pgMemory = Math.max(128, Math.round(plan.memoryMiB / 4));
  const synMemory = Math.max(256, plan.memoryMiB - pgMemory);
  const round2 = (n: number) => Math.round(n * 100) / 100;
  const pgCpus = Math.max(0.1, round2(plan.cpus / 3));
  const synCpus = Math.max(0.1, round2(plan.cpus - pgCpus));
  return { synapse: { memoryMiB: synMemory, cpus: synCpus }, postgres: { memoryMiB: pgMemory, cpus: pgCpus } };
}

/**
 * Docker healthcheck timing overrides (the test command stays the image's).
 * The images check every 10 s (PostgreSQL) and 15 s (Synapse), so a fresh
 * container turns healthy 10–15 s after it is ready; a shorter interval (tests
 * use 1 s) shows it sooner, at the price of running the check more often.
 */
export interface HealthcheckOverride {
  intervalMs?: number;
  startPeriodMs?: number;
}

export interface ContainerSpecInput {
  names: HomeserverNames;
  paths: HomeserverPaths;
  serverName: string;
  uid: number;
  image: string;
  resources: ContainerResources;
  healthcheck?: HealthcheckOverride;
  /** Added to the container's labels (tests mark their run). */
  extraLabels?: Record<string, string>;
  /**
   * Development only (local federation): a root-owned file of the agent's, mounted read-only as
   * Synapse's /etc/hosts, that resolves the names of this host's homeservers to the host.
   */
  hostsFile?: string;
  /** Synapse's max_upload_size, which sizes its /tmp. */
  maxUploadMiB: number;
}

export const PIDS_LIMIT = 200;
export const STOP_TIMEOUT_SECONDS = 30;
/** Spool of request bodies over 100 kB (media uploads): 2 × max_upload_size, at least 100m. Counts against the memory limit when used. */
export function synapseTmpSize(maxUploadMiB: number): string {
  return `${Math.max(100, 2 * maxUploadMiB)}m`;
}

const MiB = 1024 * 1024;

function labels(input: ContainerSpecInput, role: Role): Record<string, string> {
  return {
    ...input.extraLabels,
    [WORKLOAD_LABEL]: input.names.serverId,
    [KIND_LABEL]: HOMESERVER_KIND,
    [ROLE_LABEL]: role,
    [SERVER_NAME_LABEL]: input.serverName,
  };
}

function healthcheck(override: HealthcheckOverride | undefined): Docker.HealthConfig | undefined {
  if (!override || (override.intervalMs === undefined && override.startPeriodMs === undefined)) return undefined;
  // Without Test, Docker keeps the image's command and fills unset fields from the image.
  return {
    ...(override.intervalMs === undefined ? {} : { Interval: override.intervalMs * 1e6 }),
    ...(override.startPeriodMs === undefined ? {} : { StartPeriod: override.startPeriodMs * 1e6 }),
  };
}

/**
 * PostgreSQL's healthcheck, the same for berth/postgres and the official image
 * (which has none): pg_isready over TCP. The first start's temporary server
 * (initdb, CREATE DATABASE) listens on no TCP port in either image, so the
 * check stays red until initialisation is done; over the socket, the official
 * image's temporary server would look ready.
 */
export const POSTGRES_READY_TEST = [
  "pg_isready",
  "--host=127.0.0.1",
  "--port=5432",
  `--username=${POSTGRES_USER}`,
  `--dbname=${POSTGRES_DB}`,
  "--quiet",
  "--timeout=5",
];

function postgresHealthcheck(override: HealthcheckOverride | undefined): Docker.HealthConfig {
  return {
    Test: ["CMD", ...POSTGRES_READY_TEST],
    Interval: (override?.intervalMs ?? 10_000) * 1e6,
    Timeout: 6_000 * 1e6,
    StartPeriod: (override?.startPeriodMs ?? 60_000) * 1e6,
    Retries: 3,
  };
}

/** What every container of a homeserver gets (images/README.md, "Run-time contract"). */
function hardened(input: ContainerSpecInput): Docker.HostConfig {
  const memory = Math.round(input.resources.memoryMiB * MiB);
  return {
    ReadonlyRootfs: true,
    CapDrop: ["ALL"],
    SecurityOpt: ["no-new-privileges"],
    Privileged: false,
    PidsLimit: PIDS_LIMIT,
    Memory: memory,
    MemorySwap: memory, // no swap beyond the limit
    NanoCpus: Math.round(input.resources.cpus * 1e9),
    RestartPolicy: { Name: "unless-stopped", MaximumRetryCount: 0 },
    LogConfig: { Type: "json-file", Config: { "max-size": "10m", "max-file": "3" } },
    IpcMode: "private",
    PublishAllPorts: false,
  };
}

/**
 * A host path in the container. A mount, not a legacy bind string: Docker refuses a missing source
 * instead of making an empty directory there, so a container Docker restarts at boot, before the
 * agent has mounted the server's storage quota (storage-quota.ts), fails rather than starting on
 * an empty data directory on the host's disk (PostgreSQL would initialise a new, empty database).
 */
function bind(source: string, target: string, readOnly = false): Docker.MountSettings {
  return { Type: "bind", Source: source, Target: target, ReadOnly: readOnly };
}

function withSpecHash(options: Docker.ContainerCreateOptions): Docker.ContainerCreateOptions {
  const hash = createHash("sha256").update(JSON.stringify(options)).digest("hex").slice(0, 16);
  return { ...options, Labels: { ...options.Labels, [SPEC_HASH_LABEL]: hash } };
}

export function postgresContainer(input: ContainerSpecInput): Docker.ContainerCreateOptions {
  const { paths } = input;
  return withSpecHash({
    name: input.names.postgres,
    Image: input.image,
    Hostname: "postgres",
    User: `${input.uid}:${input.uid}`,
    Env: [
      `POSTGRES_USER=${POSTGRES_USER}`,
      `POSTGRES_DB=${POSTGRES_DB}`,
      // a file, so the password is not in `docker inspect`
      "POSTGRES_PASSWORD_FILE=/run/secrets/postgres-password",
      // Synapse wants C collation; berth/postgres does this anyway, the official image needs it said
      "POSTGRES_INITDB_ARGS=--encoding=UTF8 --locale=C",
      // psql run with `docker exec` finds the password here
      "PGPASSFILE=/run/secrets/pgpass",
    ],
    Cmd: ["postgres", ...Object.entries(postgresSettings(input.resources)).flatMap(([name, value]) => ["-c", `${name}=${value}`])],
    Labels: labels(input, "postgres"),
    StopTimeout: STOP_TIMEOUT_SECONDS,
    Healthcheck: postgresHealthcheck(input.healthcheck),
    HostConfig: {
      ...hardened(input),
      Mounts: [
        bind(paths.postgres, "/var/lib/postgresql/data"),
        bind(`${paths.secrets}/${SECRET_FILES.postgresPassword}`, "/run/secrets/postgres-password", true),
        bind(`${paths.secrets}/${SECRET_FILES.pgpass}`, "/run/secrets/pgpass", true),
      ],
      Tmpfs: {
        "/run/postgresql": "rw,nosuid,nodev,noexec,size=1m",
        "/tmp": "rw,nosuid,nodev,noexec,size=16m",
      },
      NetworkMode: input.names.dbNetwork,
    },
  });
}

/** Synapse, created on its -hs network; the caller connects it to the -db network before starting it. */
export function synapseContainer(input: ContainerSpecInput, name = input.names.synapse): Docker.ContainerCreateOptions {
  const check = healthcheck(input.healthcheck);
  return withSpecHash({
    name,
    Image: input.image,
    Hostname: "synapse",
    User: `${input.uid}:${input.uid}`,
    Env: [
      // where homeserver.yaml's modules are imported from (user-limit-module.ts)
      `PYTHONPATH=${SYNAPSE_MODULES_DIR}`,
      `MALLOC_CONF=${jemallocConfig(input.resources)}`,
    ],
    Labels: labels(input, "synapse"),
    StopTimeout: STOP_TIMEOUT_SECONDS,
    ...(check ? { Healthcheck: check } : {}),
    HostConfig: {
      ...hardened(input),
      Mounts: [
        bind(input.paths.synapse, SYNAPSE_DATA),
        bind(input.paths.synapseModules, SYNAPSE_MODULES_DIR, true),
        ...(input.hostsFile ? [bind(input.hostsFile, "/etc/hosts", true)] : []),
      ],
      Tmpfs: { "/tmp": `rw,nosuid,nodev,noexec,size=${synapseTmpSize(input.maxUploadMiB)}` },
      NetworkMode: input.names.hsNetwork,
    },
  });
}

/** Paths that would hand a container the Docker daemon (and so the host). */
const DOCKER_SOCKETS = ["/var/run/docker.sock", "/run/docker.sock", "/var/run/docker", "/run/docker", "/run/containerd", "/var/run/containerd"];

/** Throws when a container has Docker's (or containerd's) socket mounted. */
export function assertNoDockerSocket(info: Docker.ContainerInspectInfo): void {
  for (const mount of info.Mounts ?? []) {
    const source = mount.Source ?? "";
    if (DOCKER_SOCKETS.some((s) => source === s || source.startsWith(`${s}/`)) || /docker\.sock$|containerd\.sock$/.test(source)) {
      throw new Error(`container ${info.Name} has the container runtime's socket mounted (${source}): refusing to run it`);
    }
  }
}

/** Marks the upkeep tool's one-off containers, apart from the workload's (which the inventory counts). */
export const UPKEEP_LABEL = "org.berth.upkeep";

/**
 * The state compressor's one-off run (images/upkeep/compress_state.py): on the homeserver's
 * internal -db network only, as its uid, hardened like the others, with PostgreSQL's password
 * mounted read-only; never restarted.
 */
export function upkeepContainer(input: ContainerSpecInput, run: { chunkSize: number; chunks: number }): Docker.ContainerCreateOptions & { name: string } {
  return {
    name: `${input.names.postgres}-upkeep`,
    Image: input.image,
    User: `${input.uid}:${input.uid}`,
    Cmd: [input.names.postgres, POSTGRES_USER, POSTGRES_DB, String(run.chunkSize), String(run.chunks)],
    Labels: { ...input.extraLabels, [UPKEEP_LABEL]: input.names.serverId },
    HostConfig: {
      ...hardened(input),
      RestartPolicy: { Name: "no", MaximumRetryCount: 0 },
      Mounts: [bind(`${input.paths.secrets}/${SECRET_FILES.postgresPassword}`, "/run/secrets/postgres-password", true)],
      Tmpfs: { "/tmp": "rw,nosuid,nodev,noexec,size=16m" },
      NetworkMode: input.names.dbNetwork,
    },
  };
}

/** Prints the image's Synapse schema versions: the one it migrates databases to, and the oldest code its migrations leave a database usable by. */
const SCHEMA_VERSIONS_SCRIPT = "from synapse.storage.schema import SCHEMA_VERSION, SCHEMA_COMPAT_VERSION; print(SCHEMA_VERSION, SCHEMA_COMPAT_VERSION)";

/** A one-off run of the server's Synapse image, hardened like Synapse, without network or mounts, printing its schema versions. */
export function schemaVersionsContainer(input: ContainerSpecInput): Docker.ContainerCreateOptions & { name: string } {
  return {
    name: `${input.names.synapse}-schema`,
    Image: input.image,
    User: `${input.uid}:${input.uid}`,
    Entrypoint: ["python", "-c", SCHEMA_VERSIONS_SCRIPT],
    Cmd: [],
    Labels: { ...input.extraLabels },
    HostConfig: { ...hardened(input), RestartPolicy: { Name: "no", MaximumRetryCount: 0 }, NetworkMode: "none" },
  };
}
