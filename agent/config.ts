// The agent's configuration: `agent.json` in the config directory, written by
// `berth-agent enroll`, read by `run` and `status`. Holds no secret (the host
// key is its own file, see credentials.ts).
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { proxyConfigSchema } from "./proxy/caddy-config.ts";
import { isAbsolute, join, resolve } from "node:path";
import { z } from "zod";
import { publicAddressesSchema } from "../protocol/messages.ts";
import { writeFileAtomic } from "./atomic-file.ts";
import { HOST_NAMESPACE } from "./homeserver/names.ts";

export const DEFAULT_CONFIG_DIR = "/etc/berth-agent";
export const CONFIG_FILE = "agent.json";
export const DEFAULT_DATA_ROOT = "/var/lib/berth";
export const CONFIG_DIR_ENV = "BERTH_AGENT_CONFIG";

const absolutePath = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => isAbsolute(p), "must be an absolute path");

const interval = (fallback: number) => z.number().int().min(10).max(3_600_000).default(fallback);

export const agentConfigSchema = z.strictObject({
  /** Base URL of the control plane (where enrollment happened). */
  controlPlaneUrl: z.url({ protocol: /^https?$/ }),
  hostId: z.string().min(1).max(128),
  /** The WebSocket URL the agent dials (from the enrollment response). */
  connectUrl: z.url({ protocol: /^(wss?|https?)$/ }),
  /** Informational, from enrollment. */
  region: z.string().max(64).optional(),
  name: z.string().max(64).optional(),
  /** Where customer data lives; must sit on dm-crypt unless --allow-unencrypted-data-root. */
  dataRoot: absolutePath.default(DEFAULT_DATA_ROOT),
  /**
   * Several agents sharing one Docker Engine (`npm run dev -- --hosts N`): this one's namespace,
   * in the name and on a label of everything it makes, its uids from a range of its own; it sees
   * and touches only its own (homeserver/names.ts). Absent on a real host: one agent, today's names.
   */
  hostNamespace: z.string().regex(HOST_NAMESPACE, "two characters: a letter g–z, then a letter or digit").optional(),
  /** The job journal and other local state. Default: <config dir>/state. */
  stateDir: absolutePath.optional(),
  usageIntervalMs: interval(30_000),
  heartbeatIntervalMs: interval(20_000),
  /** Reconnect backoff: delay = random(0, min(reconnectMaxMs, reconnectBaseMs · 2^attempt)). */
  reconnectBaseMs: interval(1_000),
  reconnectMaxMs: interval(15_000),
  /** On SIGTERM, how long running jobs may take to finish before they are aborted and handed back. */
  shutdownTimeoutMs: z.number().int().min(0).max(3_600_000).default(30_000),
  /** Jobs run at the same time (different ids). */
  maxConcurrentJobs: z.number().int().min(1).max(64).default(4),
  /** Let homeserver jobs pull images the host lacks (off: a missing image fails the job). */
  pullImages: z.boolean().default(false),
  /** The host's public IPv4 (and IPv6), which its homeservers' DNS records point at: set by the operator, never guessed. */
  publicAddresses: publicAddressesSchema.optional(),
  /** The host's Caddy, driven through its admin API (HTTPS for every homeserver). Without it servers are not routed. */
  proxy: proxyConfigSchema.optional(),
});

export type AgentConfigFile = z.input<typeof agentConfigSchema>;
export type AgentConfig = z.output<typeof agentConfigSchema> & { stateDir: string; configDir: string };

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** --config wins, then $BERTH_AGENT_CONFIG, then /etc/berth-agent. */
export function resolveConfigDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const chosen = flag ?? (env[CONFIG_DIR_ENV] || undefined) ?? DEFAULT_CONFIG_DIR;
  return resolve(chosen);
}

export function configPath(configDir: string): string {
  return join(configDir, CONFIG_FILE);
}

export function isEnrolled(configDir: string): boolean {
  return existsSync(configPath(configDir));
}

export function loadConfig(configDir: string): AgentConfig {
  const path = configPath(configDir);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new ConfigError(`${path} does not exist: this host is not enrolled (run \`berth-agent enroll\` first)`);
    }
    throw new ConfigError(`cannot read ${path}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`${path} is not valid JSON: ${(error as Error).message}`);
  }
  const parsed = agentConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.length ? issue.path.join(".") : "(file)"}: ${issue.message}`).join("; ");
    throw new ConfigError(`${path} is invalid: ${problems}`);
  }
  return { ...parsed.data, stateDir: parsed.data.stateDir ?? join(configDir, "state"), configDir };
}

/** Validates and writes agent.json atomically (creating the config directory 0700 if needed). */
export function writeConfig(configDir: string, config: AgentConfigFile): void {
  const checked = agentConfigSchema.safeParse(config);
  if (!checked.success) throw new ConfigError(`refusing to write an invalid config: ${checked.error.message}`);
  mkdirSync(configDir, { recursive: true, mode: 0o700 });
  writeFileAtomic(configPath(configDir), `${JSON.stringify(config, null, 2)}\n`, 0o644);
}
