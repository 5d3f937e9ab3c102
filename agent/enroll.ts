// Enrollment: make the host's key pair, present a join token and the public key
// to the control plane, and on success write host-key.pem (0600) and agent.json.
// The join token is sent once and never printed, logged or stored.
import { accessSync, constants, mkdirSync } from "node:fs";
import { availableParallelism, hostname } from "node:os";
import si from "systeminformation";
import { enrollRequest, enrollResponse, type Capacity, type EnrollRequest, type EnrollResponse } from "../protocol/messages.ts";
import { DEFAULT_DATA_ROOT, configPath, isEnrolled, loadConfig, writeConfig } from "./config.ts";
import { generateHostKey, publicKeyBase64url, saveHostKey } from "./credentials.ts";
import { findMount, type MountEntry } from "./disk-encryption.ts";
import { errorMessage } from "./log.ts";

export const ENROLL_PATH = "/api/agent/enroll";

/**
 * A control plane that could not be reached, or failed on its side (5xx, 429), is asked again:
 * it spends a join token only together with writing the host, so a failed attempt leaves the
 * token for the next. Four attempts over about 7 s; a refusal (4xx) is final at once.
 */
export const ENROLL_RETRY_DELAYS_MS = [1_000, 2_000, 4_000] as const;

export class EnrollError extends Error {
  override name = "EnrollError";
}

export interface EnrollOptions {
  url: string;
  token: string;
  name?: string;
  configDir: string;
  dataRoot?: string;
  /** Enroll again although agent.json exists (a new identity replaces the old one). */
  force?: boolean;
  agentVersion: string;
  fetch?: typeof fetch;
  capacity?: (dataRoot: string) => Promise<Capacity>;
  timeoutMs?: number;
  /** Waits before the second, third, … attempt after a failure that may pass (default ENROLL_RETRY_DELAYS_MS). */
  retryDelaysMs?: readonly number[];
  /** Told of each failure that will be tried again, and how long until then. */
  onRetry?: (reason: string, delayMs: number, attempt: number, attempts: number) => void;
}

export interface EnrollResult extends EnrollResponse {
  name: string;
  configFile: string;
}

const NAME_PATTERN = /^[a-z0-9][a-z0-9-]*$/;

/** The machine's host name made acceptable: lower case, [a-z0-9-], at most 64 characters. */
export function defaultHostName(name: string = hostname()): string {
  const cleaned = name
    .toLowerCase()
    .split(".")[0]!
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/-{2,}/g, "-")
    .replace(/^-+/, "")
    .slice(0, 64)
    .replace(/-+$/, "");
  return cleaned || "host";
}

export function isValidHostName(name: string): boolean {
  return name.length >= 1 && name.length <= 64 && NAME_PATTERN.test(name);
}

export function enrollUrl(base: string): URL {
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new EnrollError(`--url is not a URL: ${base}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new EnrollError("--url must be an https:// URL");
  if (url.protocol === "http:" && !isLoopback(url.hostname)) {
    throw new EnrollError("--url must use https:// (plain http:// is only accepted for localhost, during development)");
  }
  if (url.username || url.password) throw new EnrollError("--url must not contain credentials");
  url.search = "";
  url.hash = "";
  url.pathname = `${url.pathname.replace(/\/+$/, "")}${ENROLL_PATH}`;
  return url;
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "");
  return h === "localhost" || h.endsWith(".localhost") || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** Memory, CPUs and the size of the filesystem that holds (or will hold) the data root. */
export async function measureCapacity(dataRoot: string): Promise<Capacity> {
  const [mem, disks] = await Promise.all([si.mem(), si.fsSize()]);
  const mounts: MountEntry[] = disks.map((d) => ({ mountPoint: d.mount, device: "", fsType: d.type, source: d.fs }));
  const holder = findMount(mounts, dataRoot) ?? findMount(mounts, "/");
  const disk = holder ? disks.find((d) => d.mount === holder.mountPoint) : undefined;
  return {
    memoryMiB: Math.floor(mem.total / 2 ** 20),
    cpus: availableParallelism(),
    diskGiB: disk ? Math.floor(disk.size / 2 ** 30) : 0,
  };
}

export async function enroll(options: EnrollOptions): Promise<EnrollResult> {
  const url = enrollUrl(options.url);
  const redact = (text: string) => (options.token ? text.split(options.token).join("[redacted]") : text);
  const name = options.name ?? defaultHostName();
  if (!isValidHostName(name)) {
    throw new EnrollError(`host name "${name}" is not allowed: use 1–64 lower-case letters, digits and hyphens, starting with a letter or digit`);
  }
  if (!options.token) throw new EnrollError("a join token is required");
  const dataRoot = options.dataRoot ?? DEFAULT_DATA_ROOT;

  if (isEnrolled(options.configDir) && !options.force) {
    let who = "";
    try {
      who = ` as host ${loadConfig(options.configDir).hostId}`;
    } catch {
      // unreadable: still enrolled as far as we can tell
    }
    throw new EnrollError(`this host is already enrolled${who} (${configPath(options.configDir)}); pass --force to enroll again with a new identity`);
  }
  // Fail before spending the (possibly single-use) join token if the result cannot be saved.
  try {
    mkdirSync(options.configDir, { recursive: true, mode: 0o700 });
    accessSync(options.configDir, constants.W_OK);
  } catch (error) {
    throw new EnrollError(`cannot write to the config directory ${options.configDir}: ${errorMessage(error)}`);
  }

  const privateKey = generateHostKey();
  let capacity: Capacity;
  try {
    capacity = await (options.capacity ?? measureCapacity)(dataRoot);
  } catch (error) {
    throw new EnrollError(`cannot measure this host's capacity: ${errorMessage(error)}`);
  }
  const body: EnrollRequest = {
    joinToken: options.token,
    publicKey: publicKeyBase64url(privateKey),
    name,
    capacity,
    agentVersion: options.agentVersion,
  };
  const checked = enrollRequest.safeParse(body);
  if (!checked.success) {
    throw new EnrollError(`enrollment request is invalid: ${redact(checked.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "))}`);
  }

  const delays = options.retryDelaysMs ?? ENROLL_RETRY_DELAYS_MS;
  const attempts = delays.length + 1;
  let text = "";
  let status = 0;
  for (let attempt = 1; ; attempt++) {
    let failure: string;
    try {
      const response = await (options.fetch ?? fetch)(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json", "user-agent": `berth-agent/${options.agentVersion}` },
        body: JSON.stringify(checked.data),
        signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
        redirect: "error", // never carry the join token to another place
      });
      text = await response.text().catch(() => "");
      status = response.status;
      if (response.ok) break;
      failure = redact(`enrollment refused: ${describeError(response, text)}`);
      if (!mayPass(response.status)) {
        // An earlier attempt whose answer was lost may have been the one that enrolled this host.
        const earlier = attempt > 1 ? `; an earlier attempt may have been accepted: look for host "${name}" before making a new join token` : "";
        throw new EnrollError(`${failure}${earlier}`);
      }
    } catch (error) {
      if (error instanceof EnrollError) throw error;
      const cause = (error as { cause?: unknown }).cause;
      failure = redact(`cannot reach the control plane at ${url.origin}: ${errorMessage(cause ?? error)}`);
    }
    const delay = delays[attempt - 1];
    if (delay === undefined) throw new EnrollError(attempts > 1 ? `${failure} (after ${attempts} attempts)` : failure);
    options.onRetry?.(failure, delay, attempt, attempts);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }

  let parsed: ReturnType<typeof enrollResponse.safeParse>;
  try {
    parsed = enrollResponse.safeParse(JSON.parse(text));
  } catch {
    throw new EnrollError(`the control plane answered HTTP ${status} with something that is not JSON`);
  }
  if (!parsed.success) {
    throw new EnrollError(
      `the control plane's enrollment answer is not understood: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`,
    );
  }
  const { hostId, region, connectUrl } = parsed.data;
  if (!/^(wss?|https?):$/.test(new URL(connectUrl).protocol)) {
    throw new EnrollError(`the control plane gave a connect URL that is not a WebSocket URL: ${connectUrl}`);
  }

  saveHostKey(options.configDir, privateKey);
  writeConfig(options.configDir, {
    controlPlaneUrl: new URL(options.url).origin + new URL(options.url).pathname.replace(/\/+$/, ""),
    hostId,
    connectUrl,
    region: region.slice(0, 64),
    name,
    dataRoot,
  });
  return { hostId, region, connectUrl, name, configFile: configPath(options.configDir) };
}

/** A failure on the control plane's side, or too many requests: the same request may pass later. */
function mayPass(status: number): boolean {
  return status >= 500 || status === 429;
}

function describeError(response: Response, text: string): string {
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const message = typeof body.error?.message === "string" ? body.error.message : undefined;
    const code = typeof body.error?.code === "string" ? body.error.code : undefined;
    if (message) return `${message.slice(0, 500)} (${code ? `${code.slice(0, 64)}, ` : ""}HTTP ${response.status})`;
  } catch {
    // not the API's error shape
  }
  return `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
}
