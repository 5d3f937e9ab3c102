// The few Synapse HTTP calls the agent makes, from the host to the container's
// bridge address: readiness, the running version, and the first admin account
// (shared-secret registration, so the password never appears in a command line).
import { createHmac } from "node:crypto";
import { delay } from "../runtime/docker.ts";

export interface HttpAnswer {
  status: number;
  body: unknown;
}

export async function requestJson(
  url: string,
  options: { method?: string; body?: unknown; token?: string; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<HttpAnswer> {
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 10_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const response = await fetch(url, {
    method: options.method ?? "GET",
    headers: {
      ...(options.body === undefined ? {} : { "content-type": "application/json" }),
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
    },
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    signal,
  });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body };
}

export function baseUrl(host: string, port: number): string {
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** The test of berth/synapse's HEALTHCHECK: GET /health answers "OK". */
export async function synapseHealthy(base: string, signal?: AbortSignal): Promise<boolean> {
  const answer = await requestJson(`${base}/health`, { timeoutMs: 5_000, ...(signal ? { signal } : {}) });
  return answer.status === 200 && answer.body === "OK";
}

/** GET /_matrix/client/versions: the client API answers. */
export async function clientVersions(base: string, signal?: AbortSignal): Promise<string[]> {
  const answer = await requestJson(`${base}/_matrix/client/versions`, { signal });
  const versions = (answer.body as { versions?: unknown } | null)?.versions;
  if (answer.status !== 200 || !Array.isArray(versions)) {
    throw new Error(`/_matrix/client/versions answered ${answer.status}`);
  }
  return versions.map(String);
}

/** Retries the client API until it answers (Synapse may still be starting its listeners). */
export async function waitForClientApi(base: string, timeoutMs: number, signal?: AbortSignal): Promise<string[]> {
  const started = Date.now();
  for (;;) {
    try {
      return await clientVersions(base, signal);
    } catch (error) {
      signal?.throwIfAborted();
      if (Date.now() - started > timeoutMs) {
        throw new Error(`Synapse's client API at ${base} did not answer within ${Math.round(timeoutMs / 1000)} s: ${(error as Error).message}`);
      }
      await delay(500, signal);
    }
  }
}

/** The running Synapse version, from the (unauthenticated) federation version endpoint. */
export async function serverVersion(base: string, signal?: AbortSignal): Promise<string> {
  const answer = await requestJson(`${base}/_matrix/federation/v1/version`, { signal });
  const version = (answer.body as { server?: { version?: unknown } } | null)?.server?.version;
  if (answer.status !== 200 || typeof version !== "string") throw new Error(`/_matrix/federation/v1/version answered ${answer.status}`);
  return version;
}

export type RegisterOutcome = { created: true; userId: string; accessToken: string } | { created: false; userId: string };

/**
 * Registers a user with Synapse's shared-secret admin API
 * (POST /_synapse/admin/v1/register: a nonce, then an HMAC-SHA1 over
 * nonce, user, password, admin flag and user type, if any). An existing user is reported, not an error.
 */
export async function registerWithSharedSecret(
  base: string,
  sharedSecret: string,
  user: { localpart: string; password: string; admin: boolean; serverName: string; userType?: "support" | "bot" },
  signal?: AbortSignal,
): Promise<RegisterOutcome> {
  const userId = `@${user.localpart}:${user.serverName}`;
  const nonceAnswer = await requestJson(`${base}/_synapse/admin/v1/register`, { signal });
  const nonce = (nonceAnswer.body as { nonce?: unknown } | null)?.nonce;
  if (nonceAnswer.status !== 200 || typeof nonce !== "string") {
    throw new Error(`shared-secret registration is not available (GET /_synapse/admin/v1/register answered ${nonceAnswer.status})`);
  }
  const mac = createHmac("sha1", sharedSecret)
    .update(nonce)
    .update("\x00")
    .update(user.localpart)
    .update("\x00")
    .update(user.password)
    .update("\x00")
    .update(user.admin ? "admin" : "notadmin")
    .update(user.userType ? `\x00${user.userType}` : "")
    .digest("hex");
  const answer = await requestJson(`${base}/_synapse/admin/v1/register`, {
    method: "POST",
    body: { nonce, username: user.localpart, password: user.password, admin: user.admin, ...(user.userType ? { user_type: user.userType } : {}), mac },
    signal,
  });
  const body = (answer.body ?? {}) as { user_id?: unknown; access_token?: unknown; errcode?: unknown; error?: unknown };
  if (answer.status === 200 && typeof body.user_id === "string" && typeof body.access_token === "string") {
    return { created: true, userId: body.user_id, accessToken: body.access_token };
  }
  if (answer.status === 400 && body.errcode === "M_USER_IN_USE") return { created: false, userId };
  throw new Error(`registering ${userId} failed: ${answer.status} ${String(body.errcode ?? "")} ${String(body.error ?? "")}`.trim());
}

/** Ends the session of `token` (POST /_matrix/client/v3/logout). */
export async function logout(base: string, token: string, signal?: AbortSignal): Promise<void> {
  const answer = await requestJson(`${base}/_matrix/client/v3/logout`, { method: "POST", body: {}, token, signal });
  if (answer.status !== 200) throw new Error(`logout answered ${answer.status}`);
}
