// What the encryption-by-default check (agent/checks/encryption-by-default.ts) asks of a
// homeserver: the setting in the homeserver.yaml the agent wrote for it, and a probe of what
// Synapse does. The probe acts as a throwaway user, as a client would: the service account makes
// it (hidden: of the type no list or count of users includes; exempt from the plan's user limit
// while it is made), it logs in, creates a private room
// without asking for encryption and reads the room's state; then the room is purged and the user
// deactivated and erased, whatever happened.
import { randomBytes } from "node:crypto";
import { closeSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { writeFileAtomic } from "../atomic-file.ts";
import { errorMessage, type Logger } from "../log.ts";
import { openOwnedFileSync } from "../owned-directories.ts";
import { delay } from "../runtime/docker.ts";
import { HOMESERVER_CONFIG_FILE } from "./config.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import { homeserverPaths } from "./names.ts";
import { randomSecret } from "./secrets.ts";
import { administer } from "./service-account.ts";
import { requestJson } from "./synapse-api.ts";
import { PROBE_LOCALPART_FILE } from "./user-limit-module.ts";

/** Every probe user's localpart starts with this, then random hex: unmistakable, never a customer's. */
export const PROBE_LOCALPART_PREFIX = "berth-check-";

export const ROOM_ENCRYPTION_SETTING = "encryption_enabled_by_default_for_room_type";

/** Log-ins Synapse rate-limits (per address: the host is one); waited out this many times at most. */
const LOGIN_ATTEMPTS = 5;

/**
 * The setting's value in the homeserver.yaml the agent wrote (a top-level key: the agent's YAML
 * writer double-quotes every string), or nothing when the file does not set it. Read without
 * following a link: Synapse can write to its own directory.
 */
export function configuredRoomEncryption(core: HomeserverCore, serverId: string, dataRoot: string): string | undefined {
  core.requireRecord(serverId);
  const file = join(homeserverPaths(dataRoot, serverId).synapse, HOMESERVER_CONFIG_FILE);
  const fd = openOwnedFileSync(file, "the homeserver's configuration");
  if (fd === undefined) throw new Error("the homeserver's configuration is missing");
  try {
    return roomEncryptionIn(readFileSync(fd, "utf8"));
  } finally {
    closeSync(fd);
  }
}

/** The setting's value in a homeserver.yaml's text. */
export function roomEncryptionIn(configText: string): string | undefined {
  const match = new RegExp(`^${ROOM_ENCRYPTION_SETTING}:[ \\t]*(.*?)[ \\t]*$`, "m").exec(configText);
  if (!match) return undefined;
  const raw = match[1]!;
  if (raw.startsWith('"')) {
    try {
      return String(JSON.parse(raw));
    } catch {
      return raw;
    }
  }
  return raw.replace(/^'(.*)'$/, "$1");
}

const loginAnswer = z.object({ access_token: z.string().min(1) });
const createRoomAnswer = z.object({ room_id: z.string().min(1).max(255) });
const encryptionState = z.object({ algorithm: z.string().max(255) });

/** Creates a private room as a throwaway user and returns the algorithm of its m.room.encryption, or nothing when it has none. */
export function probeRoomEncryption(core: HomeserverCore, serverId: string, ctx: OperationContext): Promise<string | undefined> {
  return administer(core, serverId, ctx, async ({ admin, record, paths, log, base }) => {
    const localpart = `${PROBE_LOCALPART_PREFIX}${randomBytes(8).toString("hex")}`;
    const userId = `@${localpart}:${record.serverName}`;
    const password = randomSecret(32);
    let roomId: string | undefined;
    // The plan's user limit lets this one registration through (user-limit-module.ts): the probe is hidden, uncounted and gone within seconds.
    const exemption = join(paths.synapseModules, PROBE_LOCALPART_FILE);
    writeFileAtomic(exemption, `${localpart}\n`, 0o644, 0);
    try {
      await admin.createProbeUser(userId, password);
    } finally {
      rmSync(exemption, { force: true });
    }
    log.info("encryption probe: throwaway user created", { userId });
    try {
      const token = await logIn(base, userId, password, ctx.signal);
      const created = await client(base, token, ctx.signal, "POST", "/createRoom", { preset: "private_chat" });
      roomId = parsed(createRoomAnswer, created, "creating a private room").room_id;
      const state = await client(base, token, ctx.signal, "GET", `/rooms/${encodeURIComponent(roomId)}/state/m.room.encryption/`);
      if (state.status === 404) return undefined;
      return parsed(encryptionState, state, "reading the room's encryption").algorithm;
    } finally {
      await cleanUp(log, [
        ["purging the probe's room", async () => void (roomId && (await admin.startRoomDeletion(roomId)))],
        ["deactivating the probe user", () => admin.deactivate(userId, true)],
      ]);
      log.info("encryption probe: throwaway user deactivated and erased", { userId, roomId });
    }
  });
}

/** Runs every step, each whatever the others did; then fails with the first failure, if any. */
async function cleanUp(log: Logger, steps: Array<[string, () => Promise<void>]>): Promise<void> {
  const failures: string[] = [];
  for (const [what, step] of steps) {
    try {
      await step();
    } catch (error) {
      log.warn(`encryption probe: ${what} failed`, { error: errorMessage(error) });
      failures.push(`${what} failed: ${errorMessage(error)}`);
    }
  }
  if (failures.length > 0) throw new Error(failures.join("; "));
}

async function logIn(base: string, userId: string, password: string, signal: AbortSignal): Promise<string> {
  const body = { type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password, initial_device_display_name: "Berth check" };
  for (let attempt = 1; ; attempt++) {
    const answer = await requestJson(`${base}/_matrix/client/v3/login`, { method: "POST", body, signal });
    const retryAfter = (answer.body as { retry_after_ms?: unknown } | null)?.retry_after_ms;
    if (answer.status !== 429 || attempt >= LOGIN_ATTEMPTS) return parsed(loginAnswer, answer, "logging in").access_token;
    await delay(typeof retryAfter === "number" ? Math.min(retryAfter, 10_000) : 1_000, signal);
  }
}

function client(base: string, token: string, signal: AbortSignal, method: string, path: string, body?: unknown) {
  return requestJson(`${base}/_matrix/client/v3${path}`, { method, token, signal, ...(body === undefined ? {} : { body }) });
}

function parsed<T>(schema: z.ZodType<T>, answer: { status: number; body: unknown }, what: string): T {
  const result = schema.safeParse(answer.body);
  if (answer.status !== 200 || !result.success) throw new Error(`${what} as the probe user answered ${answer.status}`);
  return result.data;
}
