// Helpers for test/e2e/homeserver.test.ts (the product runs as agent-helpers'
// DevServer with its local agent and Caddy): HTTPS to a homeserver through
// Caddy trusting only Caddy's local CA; Matrix clients (test/matrix-clients.ts, re-exported here);
// encrypted attachments as the Matrix spec defines them; and the host-side
// evidence (pg_dump, container logs, every file of the server's data dir).
import { execFile } from "node:child_process";
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { lstatSync, readdirSync, readFileSync, type Stats } from "node:fs";
import { join } from "node:path";
import { Agent, fetch as undiciFetch } from "undici";
import { beforeEach } from "vitest";
import type { MatrixClient, MatrixError, MatrixEvent } from "matrix-js-sdk";
import { destroyDevHomeservers } from "../../scripts/dev-reset.mjs";
import { anonymousClient, type FetchFn, type Login } from "../matrix-clients.ts";
import { reservePort, reservePortPair } from "../ports.ts";
import { DevServer, Fatal, sleep, tempRoot, waitFor, type Api } from "./agent-helpers";
import { newestTokenLink } from "./browser-helpers";
import type { presentBackup, presentServer } from "../../worker/http/present";

// ---------- processes ----------

export function run(command: string, args: string[], { timeoutMs = 120_000, maxBuffer = 512 * 1024 * 1024 } = {}) {
  return new Promise<{ code: number; stdout: Buffer; stderr: Buffer }>((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer, encoding: "buffer" }, (error, stdout, stderr) => {
      if (error && typeof (error as { code?: unknown }).code !== "number") {
        reject(new Error(`${command} ${args.join(" ")}: ${String(error)} ${stderr.toString("utf8")}`));
        return;
      }
      resolve({ code: error ? Number((error as { code: number }).code) : 0, stdout, stderr });
    });
  });
}

// ---------- the product on this machine ----------

/** `npm run dev` with its local agent and Caddy (HTTPS on a port of its own), its state in a new temporary directory, answering. */
export async function startDevWithAgent(tempPrefix: string): Promise<DevServer> {
  const root = tempRoot(tempPrefix);
  const dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"), { httpsPort: await reservePortPair() });
  await dev.start();
  return dev;
}

/** Stops the dev server, then destroys the homeservers it left on the host through the agent's own destroy path. */
export async function stopDevWithAgent(dev: DevServer | undefined, label: string): Promise<void> {
  if (!dev) return;
  await dev.stop();
  await destroyDevHomeservers(dev.persistTo).catch((error) => console.warn(`[${label}] cleanup failed: ${String(error)}`));
}

// ---------- a story of steps ----------

/** When each step of a story was reached, in seconds from its start: printed at the end, and with a failure. */
export class Timeline {
  private readonly started = Date.now();
  private readonly entries: string[] = [];

  mark(what: string): void {
    this.entries.push(`${((Date.now() - this.started) / 1000).toFixed(1).padStart(6)} s  ${what}`);
  }

  toString(): string {
    return this.entries.join("\n");
  }
}

/** Steps that build on each other: once one fails, the later ones are skipped, and `diagnostics` is printed once. */
export function skipAfterFirstFailure(diagnostics: () => Promise<string>): void {
  let broken = false;
  beforeEach((context) => {
    if (broken) context.skip();
    context.onTestFailed(async () => {
      broken = true;
      console.error(await diagnostics());
    });
  });
}

/** What to read when a step fails: the timeline, the server as its owner sees it, its containers' logs, the dev processes' output. */
export async function homeserverDiagnostics(
  timeline: Timeline,
  dev: DevServer | undefined,
  api: Api | undefined,
  server: ServerView | undefined,
): Promise<string> {
  const parts: string[] = [`--- timings ---\n${timeline}`];
  if (server && api) {
    const view = await api.expect<ServerView>(200, "GET", `/api/servers/${server.id}`).catch((error) => String(error));
    parts.push(`--- server ---\n${JSON.stringify(view, null, 2)}`);
  }
  if (server) {
    // By label: on whichever local host (host namespace) the server runs, on several mid-move.
    const listed = await run("docker", ["ps", "-a", "--filter", `label=berth.workload=${server.id}`, "--format", "{{.Names}}"]).catch(() => undefined);
    for (const container of (listed?.stdout.toString("utf8") ?? "").split("\n").filter(Boolean).sort().reverse()) {
      const lines = container.endsWith("-synapse") ? 60 : 20;
      parts.push(`--- docker logs --tail ${lines} ${container} ---\n${await dockerLogsTail(container, lines)}`);
    }
  }
  if (dev) parts.push(`--- tail of the dev log (${dev.logFile}) ---\n${dev.logTail(80)}`);
  return parts.join("\n");
}

// ---------- a paying customer ----------

/**
 * Signs `api` up as `email`, verifies the address from the dev mailbox, logs
 * in, subscribes to the starter plan through Checkout (paid with the test card
 * at the emulator's control endpoint) and waits until the subscription is active.
 */
export async function payingCustomer(api: Api, baseUrl: string, email: string, password: string): Promise<void> {
  await api.expect(202, "POST", "/api/auth/signup", { email, password });
  const verify = await newestTokenLink(baseUrl, email, "/verify-email");
  await api.expect(200, "POST", "/api/auth/verify-email", { token: new URL(verify).searchParams.get("token") });
  await api.expect(200, "POST", "/api/auth/login", { email, password });
  if (!api.cookie.startsWith("__Host-berth_session=")) throw new Error("logging in set no session cookie");
  const { url: checkoutUrl } = await api.expect<{ url: string }>(200, "POST", "/api/billing/checkout", { plan: "starter" });
  const checkout = new URL(checkoutUrl);
  const sessionId = /^\/c\/pay\/(cs_test_[A-Za-z0-9_]+)$/.exec(checkout.pathname)?.[1];
  if (!sessionId) throw new Error(`unexpected Checkout URL ${checkoutUrl}`);
  const paid = await fetch(`${checkout.origin}/_emulator/checkout/sessions/${sessionId}/complete`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ card: "4242424242424242" }),
  });
  if (paid.status >= 300) throw new Error(`paying at the emulator answered ${paid.status}: ${await paid.text()}`);
  await waitFor(
    "the subscription to be active",
    async () => (await api.expect<{ status: string }>(200, "GET", "/api/billing/subscription")).status === "active",
    { timeoutMs: 30_000, intervalMs: 250 },
  );
}

/** A server and a backup as the API presents them. */
export type ServerView = ReturnType<typeof presentServer>;
export type BackupView = ReturnType<typeof presentBackup>;

/** POST /api/servers, again while no host has room (an agent a few seconds from online). */
export async function createHomeserver(api: Api, name: string, region = "us-east"): Promise<ServerView> {
  return waitFor(
    "a host with capacity (the agent online)",
    async () => {
      const response = await api.request<ServerView>("POST", "/api/servers", { name, region });
      if (response.status === 201) return response.body;
      if (response.status === 409 && JSON.stringify(response.body).includes("no_capacity")) return undefined;
      throw new Fatal(`POST /api/servers answered ${response.status}: ${JSON.stringify(response.body)}`);
    },
    { timeoutMs: 60_000, intervalMs: 1_000 },
  );
}

/** Waits for the server to be running (failing at once if it fails); `onProgress` hears each new status and job message. */
export async function untilRunning(api: Api, id: string, onProgress: (what: string) => void = () => undefined): Promise<ServerView> {
  let progress = "";
  return waitFor(
    "the homeserver to be running",
    async () => {
      const view = await api.expect<ServerView>(200, "GET", `/api/servers/${id}`);
      if (view.status === "failed") throw new Fatal(`the server failed: ${view.statusReason} (last job: ${JSON.stringify(view.lastJob)})`);
      const now = `${view.status} ${view.lastJob?.status} ${view.lastJob?.message ?? ""}`;
      if (now !== progress) {
        progress = now;
        onProgress(now);
      }
      return view.status === "running" ? view : undefined;
    },
    { timeoutMs: 180_000, intervalMs: 1_000 },
  );
}

// ---------- administering a homeserver through the API ----------

/** What an administration route (users, registration tokens, rooms, settings) answered, once its job finished: its body, or its error. */
export type Administered<T> = { status: number; body: T; error?: undefined } | { status: number; body?: undefined; error: { code: string; message: string } };

/**
 * An administration request: its answer, or, when the host took longer than the route waits
 * (202 with the job), the job's once it finished (`status` is then the 202's).
 */
export async function administer<T = any>(api: Api, method: string, path: string, body?: unknown): Promise<Administered<T>> {
  const response = await api.request(method, path, body);
  const poll = response.status === 202 ? (response.body?.job?.poll as string | undefined) : undefined;
  if (poll) {
    const job = await waitFor(
      `the job of ${method} ${path}`,
      async () => {
        const { job } = await api.expect<{ job: { status: string; result: T; error: { code: string; message: string } } }>(200, "GET", poll);
        return job.status === "pending" ? undefined : job;
      },
      // A settings change restarts Synapse, which takes longest.
      { timeoutMs: 150_000, intervalMs: 250 },
    );
    return job.status === "succeeded" ? { status: response.status, body: job.result } : { status: response.status, error: job.error };
  }
  if (response.status >= 400) return { status: response.status, error: response.body?.error };
  return { status: response.status, body: response.body as T };
}

/** An administration request that must succeed: its body. */
export async function administered<T = any>(api: Api, method: string, path: string, body?: unknown): Promise<T> {
  const answer = await administer<T>(api, method, path, body);
  if (answer.error) throw new Error(`${method} ${path} answered ${answer.status}: ${JSON.stringify(answer.error)}`);
  return answer.body;
}

// ---------- HTTPS to the homeserver through Caddy ----------

/** Where a homeserver name is served on this machine: the address of the Caddy to connect to (local-hosts-helpers.ts's HostResolver). */
export interface NameResolver {
  address(hostname: string): string;
}

/**
 * An undici dispatcher that trusts only the Caddies' local CAs (`ca`, one root or the roots of
 * several local hosts, replaces the default roots; verification stays on) and resolves
 * *.berth.localhost (and the `standInDomains` Caddy stands in for) to where Caddy listens: 127.0.0.1, or what `resolver` says (with
 * `npm run dev -- --hosts N`, the address of the host that serves the name). SNI and the
 * certificate check use the name. `localAddress` (another address of 127.0.0.0/8) makes its
 * requests come from a client of their own, as Synapse's per-address rate limits see clients.
 * Connections are kept per origin: after a name moves to another host, make a new dispatcher.
 */
export function caddyDispatcher(
  ca: string | string[],
  { localAddress, resolver, standInDomains = [] }: { localAddress?: string; resolver?: NameResolver; standInDomains?: string[] } = {},
): Agent {
  const lookup = (
    hostname: string,
    options: LookupOptions,
    callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
  ) => {
    if (hostname === "berth.localhost" || hostname.endsWith(".berth.localhost") || standInDomains.includes(hostname)) {
      let address: string;
      try {
        address = resolver ? resolver.address(hostname) : "127.0.0.1";
      } catch (error) {
        callback(error as NodeJS.ErrnoException, []);
        return;
      }
      if (options.all) callback(null, [{ address, family: 4 }]);
      else callback(null, address, 4);
      return;
    }
    dnsLookup(hostname, options, callback as never);
  };
  return new Agent({ connect: { ca, lookup: lookup as never, rejectUnauthorized: true }, ...(localAddress ? { localAddress } : {}) });
}

export function fetchThrough(dispatcher: Agent): FetchFn {
  return ((input: string | URL, init?: RequestInit) => undiciFetch(input as string, { ...(init as object), dispatcher } as never)) as unknown as FetchFn;
}

/** JSON over the homeserver's HTTPS, retrying while Synapse restarts (502/503) or rate-limits (429). */
export async function matrixRequest<T = any>(
  fetchFn: FetchFn,
  method: string,
  url: string,
  { token, body, expect = [200] }: { token?: string; body?: unknown; expect?: number[] } = {},
): Promise<{ status: number; body: T }> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let status = 0;
    let parsed: any = null;
    try {
      const response = await fetchFn(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      });
      status = response.status;
      const text = await response.text();
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = text;
      }
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(500);
      continue;
    }
    if (expect.includes(status)) return { status, body: parsed as T };
    if ((status === 429 || status === 502 || status === 503) && Date.now() < deadline) {
      const retryAfter = Number(parsed?.retry_after_ms ?? 500);
      await sleep(Math.min(Math.max(retryAfter, 200), 10_000));
      continue;
    }
    throw new Error(`${method} ${new URL(url).pathname} answered ${status}: ${JSON.stringify(parsed)}`);
  }
}

// ---------- Matrix clients (more in test/matrix-clients.ts) ----------

export { sdkPasswordLogin, startCryptoClient, stopClient, type FetchFn, type Login } from "../matrix-clients.ts";

export async function passwordLogin(fetchFn: FetchFn, baseUrl: string, user: string, password: string): Promise<Login> {
  const { body } = await matrixRequest<{ user_id: string; device_id: string; access_token: string }>(fetchFn, "POST", `${baseUrl}/_matrix/client/v3/login`, {
    body: { type: "m.login.password", identifier: { type: "m.id.user", user }, password, initial_device_display_name: "berth e2e" },
  });
  return { userId: body.user_id, deviceId: body.device_id, accessToken: body.access_token };
}

/**
 * Registers through matrix-js-sdk with a registration token (MSC3231, stable in Synapse), as
 * Element does: the first request learns the session and the flows; each stage is then completed
 * (the token's, and the dummy stage Synapse may add). A refusal rejects with the SDK's MatrixError.
 */
export async function registerWithToken(
  fetchFn: FetchFn,
  baseUrl: string,
  { username, password, token }: { username: string; password: string; token: string },
): Promise<Login> {
  const client = anonymousClient(fetchFn, baseUrl);
  const request = { username, password, initial_device_display_name: "berth e2e" };
  let auth: Record<string, unknown> | undefined;
  for (let stage = 0; stage < 4; stage++) {
    try {
      const answer = await client.registerRequest(auth ? { ...request, auth } : request);
      if (!answer.access_token || !answer.device_id) throw new Error(`registration answered without a session: ${JSON.stringify(answer)}`);
      return { userId: answer.user_id, deviceId: answer.device_id, accessToken: answer.access_token };
    } catch (error) {
      const uia = (error as MatrixError).data as { session?: string; flows?: Array<{ stages: string[] }>; completed?: string[] } | undefined;
      // A stage refused (a used-up or unknown token) answers 401 too, with its errcode: that is the refusal.
      if ((error as MatrixError).httpStatus !== 401 || (error as MatrixError).errcode || !uia?.session || !uia.flows) throw error;
      const flow = uia.flows.find((candidate) => candidate.stages.includes(TOKEN_STAGE));
      if (!flow) throw new Error(`the homeserver offers no registration with a token: ${JSON.stringify(uia.flows)}`);
      const next = flow.stages.find((name) => !(uia.completed ?? []).includes(name));
      if (next !== TOKEN_STAGE && next !== "m.login.dummy") throw new Error(`registration asks for the stage ${next}`);
      auth = next === TOKEN_STAGE ? { type: TOKEN_STAGE, token, session: uia.session } : { type: next, session: uia.session };
    }
  }
  throw new Error("registration did not finish in four stages");
}

const TOKEN_STAGE = "m.login.registration_token";

/** Waits for a message event whose (clear) body is `body`; decryption failures are reported. */
export async function waitForMessage(client: MatrixClient, roomId: string, body: string, timeoutMs = 60_000): Promise<MatrixEvent> {
  return waitFor(
    `${client.getUserId()} to see and decrypt the message ${body}`,
    async () => {
      const room = client.getRoom(roomId);
      if (!room) return undefined;
      for (const event of room.getLiveTimeline().getEvents()) {
        if (event.isBeingDecrypted()) await event.getDecryptionPromise?.();
        if (event.getType() === "m.room.message" && event.getContent().body === body) return event;
      }
      const failures = room
        .getLiveTimeline()
        .getEvents()
        .filter((event) => event.isDecryptionFailure())
        .map((event) => `${event.getId()}: ${event.decryptionFailureReason ?? event.getContent().body}`);
      if (failures.length) throw new Error(`undecryptable events: ${failures.join("; ")}`);
      return undefined;
    },
    { timeoutMs, intervalMs: 200 },
  );
}

// ---------- encrypted attachments (the Matrix spec's v2: AES-256-CTR, SHA-256 of the ciphertext) ----------

const unpadded = (buffer: Buffer) => buffer.toString("base64").replace(/=+$/, "");

export interface EncryptedFile {
  url: string;
  key: { kty: "oct"; key_ops: string[]; alg: "A256CTR"; k: string; ext: true };
  iv: string;
  hashes: { sha256: string };
  v: "v2";
}

export function encryptAttachment(plaintext: Buffer): { ciphertext: Buffer; info: Omit<EncryptedFile, "url"> } {
  const key = randomBytes(32);
  // 64 random bits, then a 64-bit counter starting at zero
  const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
  const cipher = createCipheriv("aes-256-ctr", key, iv);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return {
    ciphertext,
    info: {
      key: { kty: "oct", key_ops: ["encrypt", "decrypt"], alg: "A256CTR", k: key.toString("base64url"), ext: true },
      iv: unpadded(iv),
      hashes: { sha256: unpadded(createHash("sha256").update(ciphertext).digest()) },
      v: "v2",
    },
  };
}

export function decryptAttachment(ciphertext: Buffer, info: EncryptedFile): Buffer {
  const hash = unpadded(createHash("sha256").update(ciphertext).digest());
  if (hash !== info.hashes.sha256) throw new Error(`attachment hash mismatch: ${hash} != ${info.hashes.sha256}`);
  const decipher = createDecipheriv("aes-256-ctr", Buffer.from(info.key.k, "base64url"), Buffer.from(info.iv, "base64"));
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

/** Downloads media over the authenticated media API (Synapse 1.120+ requires it for new media). */
export async function downloadMedia(fetchFn: FetchFn, baseUrl: string, mxc: string, token: string): Promise<Buffer> {
  const match = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(mxc);
  if (!match) throw new Error(`not an mxc URL: ${mxc}`);
  const response = await fetchFn(`${baseUrl}/_matrix/client/v1/media/download/${match[1]}/${match[2]}`, {
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(30_000),
  });
  const bytes = Buffer.from(await response.arrayBuffer());
  if (response.status !== 200) throw new Error(`media download answered ${response.status}: ${bytes.toString("utf8").slice(0, 300)}`);
  return bytes;
}

// ---------- evidence on the host ----------

/** Every regular file under `dir` (symlinks not followed), with its bytes. */
export function* filesUnder(dir: string): Generator<{ path: string; bytes: Buffer }> {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of entries) {
    const path = join(dir, name);
    let stat: Stats;
    try {
      stat = lstatSync(path);
    } catch {
      continue; // removed meanwhile (PostgreSQL's temporary files)
    }
    if (stat.isDirectory()) yield* filesUnder(path);
    else if (stat.isFile()) {
      try {
        yield { path, bytes: readFileSync(path) };
      } catch {
        // removed meanwhile
      }
    }
  }
}

export interface Haystack {
  name: string;
  /** Where each needle was found (file paths for directories). */
  find(needle: string): string[];
  /** How many bytes were searched. */
  size: number;
}

export function bufferHaystack(name: string, bytes: Buffer): Haystack {
  return { name, size: bytes.length, find: (needle) => (bytes.includes(Buffer.from(needle, "utf8")) ? [name] : []) };
}

export function directoryHaystack(name: string, dir: string): Haystack & { files: number; withBytes(bytes: Buffer): string[] } {
  const files = [...filesUnder(dir)];
  return {
    name,
    files: files.length,
    withBytes: (bytes) => files.filter((file) => file.bytes.equals(bytes)).map((file) => file.path),
    size: files.reduce((total, file) => total + file.bytes.length, 0),
    find: (needle) => {
      const bytes = Buffer.from(needle, "utf8");
      return files.filter((file) => file.bytes.includes(bytes)).map((file) => file.path);
    },
  };
}

export async function dockerLogs(container: string): Promise<Buffer> {
  const result = await run("docker", ["logs", container]);
  if (result.code !== 0) throw new Error(`docker logs ${container}: ${result.stderr.toString("utf8")}`);
  return Buffer.concat([result.stdout, result.stderr]);
}

export async function dockerLogsTail(container: string, lines = 60): Promise<string> {
  const result = await run("docker", ["logs", "--tail", String(lines), container]).catch((error) => ({
    code: 1,
    stdout: Buffer.alloc(0),
    stderr: Buffer.from(String(error)),
  }));
  return Buffer.concat([result.stdout, result.stderr]).toString("utf8");
}

/** Fails at once, saying what to do, when this machine cannot run homeservers (Docker Engine and the images). */
export async function requireHomeserverHost(): Promise<void> {
  const version = await run("docker", ["version", "--format", "{{.Server.Version}}"]).catch(() => undefined);
  if (version?.code !== 0) throw new Error("Docker Engine does not answer (start dockerd)");
  const images = await run("docker", ["image", "inspect", "berth/synapse:latest", "berth/postgres:15"]);
  if (images.code !== 0) throw new Error("the homeserver images are missing: run `bash images/build.sh`");
}
