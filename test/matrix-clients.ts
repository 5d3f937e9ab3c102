// Matrix clients for the tests that talk to a real Synapse, the agent's and the end-to-end ones:
// matrix-js-sdk with its Rust crypto (stores in memory), quiet but for warnings and errors.
import { createClient, EventType, type MatrixClient } from "matrix-js-sdk";
import { logger as sdkGlobalLogger, type Logger } from "matrix-js-sdk/lib/logger.js";

// Parts of the SDK still log through its global loglevel logger (event sending, MatrixRTC), whose
// children copy its methodFactory: below warnings, nothing.
type LoglevelFactory = (method: string, level: number, name: string | symbol) => (...msg: unknown[]) => void;
const sdkRoot = sdkGlobalLogger as unknown as { methodFactory: LoglevelFactory; rebuild(): void };
const sdkFactory = sdkRoot.methodFactory;
sdkRoot.methodFactory = (method, level, name) => (method === "warn" || method === "error" ? sdkFactory(method, level, name) : () => undefined);
sdkRoot.rebuild();

/** The SDK and its Rust crypto log every sync and key request: only warnings and errors are shown. */
function quietLogger(prefix: string): Logger {
  const logger: Logger = {
    trace: () => undefined,
    debug: () => undefined,
    info: () => undefined,
    // (a fresh account's push rules are completed by the SDK, with a warning each time)
    warn: (...msg: unknown[]) => void (/^Adding default global/.test(String(msg[0])) || console.warn(prefix, ...msg)),
    error: (...msg: unknown[]) => console.error(prefix, ...msg),
    getChild: (namespace: string) => quietLogger(`${prefix}${namespace}`),
  };
  return logger;
}

export type FetchFn = typeof globalThis.fetch;

export interface Login {
  userId: string;
  deviceId: string;
  accessToken: string;
}

/** A client of the homeserver with no one logged in, for logging in and registering. */
export function anonymousClient(fetchFn: FetchFn, baseUrl: string): MatrixClient {
  return createClient({ baseUrl, fetchFn, logger: quietLogger(`[${baseUrl}] `) });
}

/** Logs in with a password through matrix-js-sdk, as an app would; a refusal rejects with the SDK's MatrixError. */
export async function sdkPasswordLogin(fetchFn: FetchFn, baseUrl: string, user: string, password: string): Promise<Login> {
  const answer = await anonymousClient(fetchFn, baseUrl).loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    initial_device_display_name: "berth e2e",
  });
  return { userId: answer.user_id, deviceId: answer.device_id, accessToken: answer.access_token };
}

/**
 * A logged-in client with Rust crypto (its store in memory), syncing. `roomKeys` (an export of
 * room keys as JSON, as Element saves one) are imported before the first sync, so the history it
 * loads decrypts with them.
 */
export async function startCryptoClient(fetchFn: FetchFn, baseUrl: string, login: Login, { roomKeys }: { roomKeys?: string } = {}): Promise<MatrixClient> {
  const client = createClient({
    baseUrl,
    userId: login.userId,
    deviceId: login.deviceId,
    accessToken: login.accessToken,
    fetchFn,
    logger: quietLogger(`[${login.userId}] `),
  });
  await client.initRustCrypto({ useIndexedDB: false });
  if (roomKeys) await client.getCrypto()!.importRoomKeysAsJson(roomKeys);
  const prepared = new Promise<void>((resolve, reject) => {
    client.on(
      "sync" as never,
      ((state: string, _previous: string, data?: { error?: Error }) => {
        if (state === "PREPARED" || state === "SYNCING") resolve();
        if (state === "ERROR") reject(new Error(`initial sync of ${login.userId} failed: ${String(data?.error)}`));
      }) as never,
    );
  });
  await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${login.userId} did not finish its initial sync within 60 s`)), 60_000);
  });
  try {
    await Promise.race([prepared, deadline]);
  } finally {
    clearTimeout(timer);
  }
  return client;
}

export async function stopClient(client: MatrixClient | undefined): Promise<void> {
  if (!client) return;
  client.stopClient();
}

/** The bodies of the messages a client has in a room's live timeline, once it has tried to decrypt them. */
export async function messageBodies(client: MatrixClient, roomId: string): Promise<string[]> {
  const events = client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
  await Promise.all(events.map((event) => event.getDecryptionPromise?.()));
  return events.filter((event) => event.getType() === EventType.RoomMessage).map((event) => event.getContent().body as string);
}
