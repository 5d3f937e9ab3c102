// Synapse's admin API as the agent calls it, from the host to the container's
// bridge address, with the service account's token (service-account.ts): the
// users, their devices, registration tokens and rooms. Answers are checked for
// the fields we use; anything else Synapse says is an error naming the call.
import { z } from "zod";
import { encryptionAlgorithm, matrixRoomId } from "../../protocol/jobs.ts";
import { requestJson } from "./synapse-api.ts";

/** Synapse answered a call with an error (its status, errcode and message). */
export class SynapseAdminError extends Error {
  override name = "SynapseAdminError";
  readonly status: number;
  readonly errcode: string;

  constructor(status: number, errcode: string, message: string) {
    super(message);
    this.status = status;
    this.errcode = errcode;
  }
}

/** A user as the v2 users list gives it: creation and last seen in milliseconds. */
const listedUser = z.object({
  name: z.string(),
  displayname: z.string().nullable(),
  admin: z.boolean(),
  deactivated: z.boolean(),
  creation_ts: z.number().nullable(),
  last_seen_ts: z.number().nullable(),
});
export type ListedUser = z.infer<typeof listedUser>;

const usersPage = z.object({ users: z.array(listedUser), total: z.number().int().nonnegative() });

/** One user (GET /_synapse/admin/v2/users/<id>): creation in seconds, here unlike the list. */
const singleUser = z.object({
  name: z.string(),
  displayname: z.string().nullable(),
  admin: z.boolean(),
  deactivated: z.boolean(),
  erased: z.boolean(),
  user_type: z.string().nullable(),
  creation_ts: z.number().nullable(),
  last_seen_ts: z.number().nullable(),
});
export type SingleUser = z.infer<typeof singleUser>;

const devices = z.object({ devices: z.array(z.object({ device_id: z.string() })) });

const registrationToken = z.object({
  token: z.string(),
  uses_allowed: z.number().int().nullable(),
  pending: z.number().int(),
  completed: z.number().int(),
  expiry_time: z.number().int().nullable(),
});
export type SynapseRegistrationToken = z.infer<typeof registrationToken>;

/** A string Synapse reports that may come from anyone on the federation: bounded on arrival, cut to `keep` characters. */
const untrusted = (keep: number) =>
  z
    .string()
    .max(64 * 1024)
    .transform((s) => Array.from(s).slice(0, keep).join(""));
const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** A room as the rooms list and the room details give it (details may lack the statistics of a room it barely knows). */
const listedRoom = z.object({
  room_id: matrixRoomId,
  name: untrusted(255).nullable(),
  canonical_alias: untrusted(255).nullable(),
  joined_members: count.nullable(),
  joined_local_members: count.nullable(),
  encryption: encryptionAlgorithm.nullable(),
  /** Published in the room directory. */
  public: z.boolean(),
  join_rules: z.string().max(255).nullable(),
  state_events: count.nullable(),
});
export type ListedRoom = z.infer<typeof listedRoom>;

/** The largest page of rooms the agent asks Synapse for. */
export const MAX_ROOMS_PAGE = 500;
const roomsPage = z.object({ rooms: z.array(listedRoom).max(MAX_ROOMS_PAGE), total_rooms: count });

/** Synapse's orders for the rooms list, largest first. */
export type RoomsOrder = "joined_members" | "joined_local_members" | "state_events";

/** A room deletion in Synapse's task scheduler; its result grows as local members are removed. */
const roomDeletion = z.object({
  delete_id: z.string().min(1).max(64),
  status: z.enum(["scheduled", "active", "complete", "failed", "cancelled"]),
  shutdown_room: z
    .object({
      kicked_users: z.array(z.string().max(255)).max(1_000_000),
      failed_to_kick_users: z.array(z.string().max(255)).max(1_000_000),
    })
    .nullable()
    .optional(),
});
export type RoomDeletion = z.infer<typeof roomDeletion>;

/** A room id, checked before it goes into an admin API URL (and encoded there). */
function roomPath(roomId: string): string {
  if (!matrixRoomId.safeParse(roomId).success) throw new Error("not a Matrix room id");
  return encodeURIComponent(roomId);
}

/**
 * Users of this type are left out of every list and count the agent makes: the service account
 * is one (Synapse's own type for service accounts: no monthly-active-user count, not in the user
 * directory), and only an admin calling Synapse's API directly can make others.
 */
export const HIDDEN_USER_TYPE = "support";

export class SynapseAdmin {
  private readonly base: string;
  private readonly token: string;
  private readonly signal: AbortSignal | undefined;

  constructor(base: string, token: string, signal?: AbortSignal) {
    this.base = base;
    this.token = token;
    this.signal = signal;
  }

  private async call<T>(
    schema: z.ZodType<T>,
    method: string,
    path: string,
    body?: unknown,
    accept: (status: number) => boolean = (status) => status === 200,
  ): Promise<{ status: number; body: T | undefined }> {
    const answer = await requestJson(`${this.base}/_synapse/admin${path}`, {
      method,
      token: this.token,
      ...(body === undefined ? {} : { body }),
      ...(this.signal ? { signal: this.signal } : {}),
      timeoutMs: 30_000,
    });
    const what = `${method} ${path.split("?")[0]}`;
    if (!accept(answer.status)) {
      const error = (answer.body ?? {}) as { errcode?: unknown; error?: unknown };
      const errcode = typeof error.errcode === "string" ? error.errcode : "";
      const message = typeof error.error === "string" ? error.error : "";
      throw new SynapseAdminError(answer.status, errcode, `Synapse's admin API refused ${what}: ${answer.status} ${errcode} ${message}`.trim());
    }
    if (answer.status !== 200) return { status: answer.status, body: undefined };
    const parsed = schema.safeParse(answer.body);
    if (!parsed.success) throw new Error(`Synapse's admin API answered ${what} unexpectedly: ${parsed.error.issues[0]?.message ?? "?"}`);
    return { status: answer.status, body: parsed.data };
  }

  /** A page of local users (deactivated and locked ones included), by name; `total` counts every match. */
  async users(query: { from: number; limit: number; search?: string }): Promise<{ users: ListedUser[]; total: number }> {
    const params = new URLSearchParams({
      from: String(query.from),
      limit: String(query.limit),
      guests: "false",
      deactivated: "true",
      locked: "true",
      not_user_type: HIDDEN_USER_TYPE,
    });
    if (query.search) params.set("name", query.search);
    return (await this.call(usersPage, "GET", `/v2/users?${params}`)).body!;
  }

  /** How many users can use the server: neither deactivated nor guests nor hidden (locked ones count: they can be unlocked). */
  async activeUsers(): Promise<number> {
    const params = new URLSearchParams({ from: "0", limit: "0", guests: "false", locked: "true", not_user_type: HIDDEN_USER_TYPE });
    return (await this.call(usersPage, "GET", `/v2/users?${params}`)).body!.total;
  }

  /** One user, or nothing when there is no such user. */
  async user(userId: string): Promise<SingleUser | undefined> {
    const answer = await this.call(singleUser, "GET", `/v2/users/${encodeURIComponent(userId)}`, undefined, (s) => s === 200 || s === 404);
    return answer.body;
  }

  /** Creates a user without a password (nobody can log in as it until one is set). */
  async createUser(userId: string, displayName: string | undefined): Promise<void> {
    await this.call(
      z.unknown(),
      "PUT",
      `/v2/users/${encodeURIComponent(userId)}`,
      displayName === undefined ? {} : { displayname: displayName },
      (s) => s === 201,
    );
  }

  /** Creates a hidden user (of the type no list or count includes) with a password: the encryption check's throwaway user. */
  async createProbeUser(userId: string, password: string): Promise<void> {
    await this.call(z.unknown(), "PUT", `/v2/users/${encodeURIComponent(userId)}`, { password, user_type: HIDDEN_USER_TYPE }, (s) => s === 201);
  }

  /**
   * Sets a password and ends every session of the user: all devices and all access tokens,
   * which Synapse also drops from its caches (its own password change does this).
   */
  async setPasswordEndingSessions(userId: string, password: string): Promise<void> {
    await this.call(z.unknown(), "PUT", `/v2/users/${encodeURIComponent(userId)}`, { password, logout_devices: true });
  }

  async setAdmin(userId: string, admin: boolean): Promise<void> {
    await this.call(z.unknown(), "PUT", `/v1/users/${encodeURIComponent(userId)}/admin`, { admin });
  }

  /** Deactivates; `erase` also removes the profile and media and hides the user's messages from users who join later. */
  async deactivate(userId: string, erase: boolean): Promise<void> {
    await this.call(z.unknown(), "POST", `/v1/deactivate/${encodeURIComponent(userId)}`, { erase });
  }

  async deviceIds(userId: string): Promise<string[]> {
    const answer = await this.call(devices, "GET", `/v2/users/${encodeURIComponent(userId)}/devices`);
    return answer.body!.devices.map((d) => d.device_id);
  }

  /** Deletes devices and their access tokens (Synapse drops them from its caches). */
  async deleteDevices(userId: string, deviceIds: string[]): Promise<void> {
    if (deviceIds.length === 0) return;
    await this.call(z.unknown(), "POST", `/v2/users/${encodeURIComponent(userId)}/delete_devices`, { devices: deviceIds });
  }

  async registrationTokens(): Promise<SynapseRegistrationToken[]> {
    const answer = await this.call(z.object({ registration_tokens: z.array(registrationToken) }), "GET", "/v1/registration_tokens");
    return answer.body!.registration_tokens;
  }

  /** A new token Synapse generates (`length` characters of its alphabet). */
  async createRegistrationToken(options: { length: number; usesAllowed: number; expiresAt?: number }): Promise<SynapseRegistrationToken> {
    const body = { length: options.length, uses_allowed: options.usesAllowed, ...(options.expiresAt === undefined ? {} : { expiry_time: options.expiresAt }) };
    return (await this.call(registrationToken, "POST", "/v1/registration_tokens/new", body)).body!;
  }

  /** Deletes a token; false when there was none. */
  async deleteRegistrationToken(token: string): Promise<boolean> {
    const answer = await this.call(z.unknown(), "DELETE", `/v1/registration_tokens/${encodeURIComponent(token)}`, undefined, (s) => s === 200 || s === 404);
    return answer.status === 200;
  }

  /** A page of the rooms this server knows, largest first by `order`; a search matches names, aliases (any room's) and ids. */
  async rooms(query: { from: number; limit: number; order: RoomsOrder; search?: string }): Promise<{ rooms: ListedRoom[]; total: number }> {
    const params = new URLSearchParams({ from: String(query.from), limit: String(Math.min(query.limit, MAX_ROOMS_PAGE)), order_by: query.order });
    if (query.search) params.set("search_term", query.search);
    const page = (await this.call(roomsPage, "GET", `/v1/rooms?${params}`)).body!;
    return { rooms: page.rooms, total: page.total_rooms };
  }

  /** One room, or nothing when the server does not know it. */
  async room(roomId: string): Promise<ListedRoom | undefined> {
    return (await this.call(listedRoom, "GET", `/v1/rooms/${roomPath(roomId)}`, undefined, (s) => s === 200 || s === 404)).body;
  }

  /** Blocks a room (nobody here can join it or be invited to it), or lifts that. */
  async setRoomBlocked(roomId: string, blocked: boolean): Promise<void> {
    await this.call(z.unknown(), "PUT", `/v1/rooms/${roomPath(roomId)}/block`, { block: blocked });
  }

  /**
   * Starts deleting a room: its local members are made to leave, then every trace of it is purged
   * from the database. Its block, if any, is kept (Synapse never purges that). Returns the
   * deletion's id.
   */
  async startRoomDeletion(roomId: string): Promise<string> {
    const answer = await this.call(z.object({ delete_id: z.string().min(1).max(64) }), "DELETE", `/v2/rooms/${roomPath(roomId)}`, {
      purge: true,
      block: false,
    });
    return answer.body!.delete_id;
  }

  /** The room's deletions Synapse knows of, running or finished. */
  async roomDeletions(roomId: string): Promise<RoomDeletion[]> {
    const answer = await this.call(
      z.object({ results: z.array(roomDeletion).max(1000) }),
      "GET",
      `/v2/rooms/${roomPath(roomId)}/delete_status`,
      undefined,
      (s) => s === 200 || s === 404,
    );
    return answer.body?.results ?? [];
  }

  async roomDeletion(deleteId: string): Promise<RoomDeletion> {
    return (await this.call(roomDeletion, "GET", `/v2/rooms/delete_status/${encodeURIComponent(deleteId)}`)).body!;
  }

  /** Deletes the cached copies of remote media last fetched before `beforeTs` (ms); how many files went. Local uploads are untouched. */
  async purgeRemoteMediaCache(beforeTs: number): Promise<number> {
    const params = new URLSearchParams({ before_ts: String(Math.floor(beforeTs)) });
    return (await this.call(z.object({ deleted: z.number().int().nonnegative() }), "POST", `/v1/purge_media_cache?${params}`, {})).body!.deleted;
  }
}
