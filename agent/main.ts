// berth-agent: the CLI entry. Parses the command line and runs its commands:
// enroll, status, and run, which starts the daemon (daemon.ts) and stops it on a signal.
import { realpathSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigError, loadConfig, resolveConfigDir, CONFIG_DIR_ENV, DEFAULT_CONFIG_DIR, type AgentConfig } from "./config.ts";
import { CredentialError, keyPath, loadHostKey } from "./credentials.ts";
import { startDaemon } from "./daemon.ts";
import { detectDiskEncryption } from "./disk-encryption.ts";
import { EnrollError, enroll } from "./enroll.ts";
import { localFederationOptions } from "./homeserver/local-federation.ts";
import { DEFAULT_UPKEEP_IMAGE } from "./homeserver/upkeep.ts";
import { listWorkloads } from "./inventory.ts";
import { Journal } from "./journal.ts";
import { createLogger, errorMessage, parseLogLevel } from "./log.ts";
import { agentVersion } from "./version.ts";
import { imageReference } from "../protocol/jobs.ts";

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

const JOIN_TOKEN_ENV = "BERTH_AGENT_JOIN_TOKEN";

const USAGE = {
  main: `berth-agent — the Berth host agent (version ${agentVersion()})

Usage:
  berth-agent enroll --url <control plane URL> --token <join token> [--name <host name>] [--data-root <dir>] [--config <dir>] [--force]
  berth-agent run [--config <dir>] [--upkeep-image <ref>] [--allow-unencrypted-data-root] [--allow-no-storage-quota] [--allow-local-federation]
  berth-agent status [--config <dir>] [--json]
  berth-agent <command> --help
  berth-agent --version

The config directory is --config, else $${CONFIG_DIR_ENV}, else ${DEFAULT_CONFIG_DIR}.

Exit codes: 0 done; 1 error; 2 bad usage; 3 the control plane revoked this host (re-enroll);
4 the control plane no longer speaks this agent's protocol (upgrade the agent).
`,
  enroll: `Usage: berth-agent enroll --url <control plane URL> --token <join token> [options]

Makes this host's Ed25519 key pair, registers the public key with the control plane using a
join token (from an operator), and writes agent.json and host-key.pem (mode 0600) to the
config directory. The token is used once and never printed or stored.

Options:
  --url <url>          the control plane's base URL (https://; http:// only for localhost)
  --token <token>      the join token (or set $${JOIN_TOKEN_ENV}, which keeps it out of \`ps\`)
  --name <name>        this host's name: lower-case letters, digits, hyphens (default: the host name)
  --data-root <dir>    where customer data will live (default: /var/lib/berth)
  --config <dir>       config directory (default: $${CONFIG_DIR_ENV} or ${DEFAULT_CONFIG_DIR})
  --force              enroll again although this host is enrolled (a new identity)
  -h, --help           this help
`,
  run: `Usage: berth-agent run [--config <dir>] [--upkeep-image <ref>] [--allow-unencrypted-data-root] [--allow-no-storage-quota] [--allow-local-federation]

Connects to the control plane and runs the jobs it sends, until SIGTERM or SIGINT (then running
jobs get 30 s to finish; unfinished ones are handed back to run again). Logs are JSON lines on stdout.

Options:
  --config <dir>                  config directory (default: $${CONFIG_DIR_ENV} or ${DEFAULT_CONFIG_DIR})
  --upkeep-image <ref>            the berth/upkeep tool image the daily upkeep runs the state compressor
                                  in, pinned as published (images/README.md), e.g.
                                  registry.example/berth/upkeep@sha256:… (default: ${DEFAULT_UPKEEP_IMAGE},
                                  which only exists where images/build.sh ran)
  --allow-unencrypted-data-root   accept customer data although the data root is not on dm-crypt/LUKS
                                  (development only; reported to the control plane)
  --allow-no-storage-quota        provision homeservers without a storage quota (a loop-mounted
                                  filesystem each, which needs root): one can fill the host's disk
                                  (development only)
  --allow-local-federation        let this host's homeservers federate with each other through the
                                  proxy: their names resolve to the host, that address is let through
                                  their block list, the proxy's internal CA is trusted (development
                                  only; needs proxy.tls "internal" and proxy.storageDir)
  -h, --help                      this help

Exit codes: 0 stopped by a signal; 1 error (not enrolled, unsafe key file, …); 3 host revoked;
4 protocol too old (upgrade the agent).
`,
  status: `Usage: berth-agent status [--config <dir>] [--json]

Shows this host's enrollment, key file, data root encryption, journal and workloads, without
contacting the control plane. Exits 1 when the agent could not run (not enrolled, bad key file).

Options:
  --config <dir>   config directory (default: $${CONFIG_DIR_ENV} or ${DEFAULT_CONFIG_DIR})
  --json           machine-readable output
  -h, --help       this help
`,
} as const;

type Command = keyof typeof USAGE;

class UsageError extends Error {
  readonly command: Command;
  constructor(message: string, command: Command) {
    super(message);
    this.command = command;
  }
}

const OPTIONS = {
  enroll: {
    url: { type: "string" },
    token: { type: "string" },
    name: { type: "string" },
    "data-root": { type: "string" },
    config: { type: "string" },
    force: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
  run: {
    config: { type: "string" },
    "upkeep-image": { type: "string" },
    "allow-unencrypted-data-root": { type: "boolean" },
    "allow-no-storage-quota": { type: "boolean" },
    "allow-local-federation": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
  status: {
    config: { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
} satisfies Record<Exclude<Command, "main">, ParseArgsConfig["options"]>;

function parse<C extends Exclude<Command, "main">>(command: C, args: string[]) {
  try {
    return parseArgs({ args, options: OPTIONS[command], strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new UsageError(errorMessage(error), command);
  }
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
        process.stderr.write(USAGE.main);
        return EXIT_USAGE;
      case "-h":
      case "--help":
      case "help":
        process.stdout.write(USAGE.main);
        return EXIT_OK;
      case "-v":
      case "--version":
        process.stdout.write(`${agentVersion()}\n`);
        return EXIT_OK;
      case "enroll":
        return await enrollCommand(parse("enroll", rest));
      case "run":
        return await runCommand(parse("run", rest));
      case "status":
        return statusCommand(parse("status", rest));
      default:
        throw new UsageError(`unknown command "${command}"`, "main");
    }
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`berth-agent: ${error.message}\n\n${USAGE[error.command]}`);
      return EXIT_USAGE;
    }
    if (error instanceof EnrollError || error instanceof ConfigError || error instanceof CredentialError) {
      process.stderr.write(`berth-agent: ${error.message}\n`);
      return EXIT_ERROR;
    }
    process.stderr.write(`berth-agent: unexpected error: ${errorMessage(error)}\n`);
    return EXIT_ERROR;
  }
}

// ---------- enroll ----------

async function enrollCommand(values: ReturnType<typeof parse<"enroll">>): Promise<number> {
  if (values.help) {
    process.stdout.write(USAGE.enroll);
    return EXIT_OK;
  }
  const token = values.token ?? process.env[JOIN_TOKEN_ENV];
  if (!values.url) throw new UsageError("enroll needs --url", "enroll");
  if (!token) throw new UsageError(`enroll needs --token (or $${JOIN_TOKEN_ENV})`, "enroll");
  if (values["data-root"] !== undefined && !values["data-root"].startsWith("/")) {
    throw new UsageError("--data-root must be an absolute path", "enroll");
  }
  const configDir = resolveConfigDir(values.config);
  const result = await enroll({
    url: values.url,
    token,
    ...(values.name === undefined ? {} : { name: values.name }),
    ...(values["data-root"] === undefined ? {} : { dataRoot: values["data-root"] }),
    configDir,
    force: values.force ?? false,
    agentVersion: agentVersion(),
    onRetry: (reason, delayMs, attempt, attempts) =>
      process.stderr.write(`${reason}; trying again in ${delayMs / 1000} s (attempt ${attempt + 1} of ${attempts})\n`),
  });
  process.stdout.write(
    `Enrolled as host ${result.hostId} ("${result.name}", region ${result.region}).\n` +
      `Wrote ${result.configFile} and ${keyPath(configDir)} (mode 0600).\n` +
      `Start the agent: systemctl enable --now berth-agent (or: berth-agent run${values.config ? ` --config ${configDir}` : ""})\n`,
  );
  return EXIT_OK;
}

// ---------- status ----------

function statusCommand(values: ReturnType<typeof parse<"status">>): number {
  if (values.help) {
    process.stdout.write(USAGE.status);
    return EXIT_OK;
  }
  const configDir = resolveConfigDir(values.config);
  const report: Record<string, unknown> = { agentVersion: agentVersion(), configDir };
  const problems: string[] = [];
  let config: AgentConfig | undefined;
  try {
    config = loadConfig(configDir);
    report.enrolled = true;
    report.hostId = config.hostId;
    report.name = config.name;
    report.region = config.region;
    report.controlPlaneUrl = config.controlPlaneUrl;
    report.connectUrl = config.connectUrl;
    report.dataRoot = config.dataRoot;
    report.stateDir = config.stateDir;
  } catch (error) {
    report.enrolled = false;
    problems.push(errorMessage(error));
  }
  try {
    loadHostKey(configDir);
    report.hostKey = { path: keyPath(configDir), ok: true };
  } catch (error) {
    report.hostKey = { path: keyPath(configDir), ok: false };
    problems.push(errorMessage(error));
  }
  if (config) {
    report.diskEncryption = detectDiskEncryption(config.dataRoot);
    try {
      const entries = new Journal(join(config.stateDir, "jobs"), { readOnly: true }).list();
      report.jobs = {
        done: entries.filter((e) => e.state === "done").length,
        interrupted: entries.filter((e) => e.state === "running").length,
      };
    } catch (error) {
      problems.push(`cannot read the job journal: ${errorMessage(error)}`);
    }
    report.workloads = listWorkloads(config.dataRoot).length;
  }
  report.problems = problems;

  if (values.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    const enc = report.diskEncryption as ReturnType<typeof detectDiskEncryption> | undefined;
    const jobs = report.jobs as { done: number; interrupted: number } | undefined;
    const lines = [
      `berth-agent ${agentVersion()}`,
      `config dir:    ${configDir}`,
      `enrolled:      ${config ? `yes, host ${config.hostId}${config.name ? ` ("${config.name}"${config.region ? `, ${config.region})` : ")"}` : ""}` : "no"}`,
    ];
    if (config) {
      lines.push(
        `control plane: ${config.controlPlaneUrl}`,
        `connect URL:   ${config.connectUrl}`,
        `host key:      ${keyPath(configDir)} ${(report.hostKey as { ok: boolean }).ok ? "(ok, owner-only)" : "(PROBLEM, see below)"}`,
        `data root:     ${config.dataRoot}: ${enc?.encrypted ? "encrypted (dm-crypt)" : "NOT encrypted: customer data is refused unless run with --allow-unencrypted-data-root"}` +
          (enc?.devices.length ? ` [${enc.devices.join(" → ")}]` : ""),
        `state dir:     ${config.stateDir}`,
        `jobs:          ${jobs ? `${jobs.done} done, ${jobs.interrupted} running or interrupted` : "unknown"}`,
        `workloads:     ${String(report.workloads ?? 0)}`,
      );
    }
    for (const problem of problems) lines.push(`problem:       ${problem}`);
    process.stdout.write(`${lines.join("\n")}\n`);
  }
  return problems.length === 0 ? EXIT_OK : EXIT_ERROR;
}

// ---------- run ----------

async function runCommand(values: ReturnType<typeof parse<"run">>): Promise<number> {
  if (values.help) {
    process.stdout.write(USAGE.run);
    return EXIT_OK;
  }
  const upkeepImage = values["upkeep-image"] ?? DEFAULT_UPKEEP_IMAGE;
  if (!imageReference.safeParse(upkeepImage).success) throw new UsageError(`--upkeep-image: not an image reference: ${upkeepImage}`, "run");
  const configDir = resolveConfigDir(values.config);
  const config = loadConfig(configDir);
  const localFederation = values["allow-local-federation"] ? localFederationOptions(config) : undefined;
  const privateKey = loadHostKey(configDir);
  const log = createLogger({ level: parseLogLevel(process.env.BERTH_AGENT_LOG_LEVEL), base: { hostId: config.hostId } });
  log.info("berth-agent starting", { agentVersion: agentVersion(), configDir, dataRoot: config.dataRoot, upkeepImage, pid: process.pid });
  const daemon = await startDaemon({
    config,
    privateKey,
    allowUnencrypted: values["allow-unencrypted-data-root"] ?? false,
    upkeepImage,
    allowNoStorageQuota: values["allow-no-storage-quota"] ?? false,
    ...(localFederation ? { localFederation } : {}),
    log,
  });

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      log.info("signal received: finishing running jobs, then exiting", { signal, timeoutMs: config.shutdownTimeoutMs });
      void daemon.stop(0, signal, config.shutdownTimeoutMs);
    } else {
      log.warn("second signal: aborting running jobs now", { signal });
      daemon.abortJobs();
    }
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  return daemon.exited;
}

// ---------- entry ----------

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  process.on("uncaughtException", (error) => {
    process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level: "error", msg: "uncaught exception", error: errorMessage(error) })}\n`);
    process.exit(EXIT_ERROR);
  });
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`berth-agent: ${errorMessage(error)}\n`);
      process.exit(EXIT_ERROR);
    },
  );
}
