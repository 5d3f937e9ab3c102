import { and, asc, desc, eq, inArray } from "drizzle-orm";
import { BACKUP_MAX_PARTS, BACKUP_PART_SIZE } from "../../protocol/messages";
import { audit } from "../audit/audit";
import { requestDelegationCheck } from "../checks/delegation";
import { checkJobUnderWay } from "../checks/runs";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { serverImportParts, serverImports, type Server, type ServerImport, type ServerImportStatus, type User } from "../db/schema";
import { ApiError, badRequest, conflict, notFound } from "../errors";
import { wrapPassphrase } from "../exports/passphrase";
import { planById } from "../billing/plans";
import { getJob } from "../fleet/jobs";
import { ownedServer } from "../servers/servers";
import { streamPart } from "../uploads/parts";

// "Import a homeserver": its owner uploads an archive (a Berth full export, or a self-hosted
// Synapse's dump, signing key and media) in parts, resumably, into R2. It waits there for the
// homeserver's domain to delegate to us: the archive's server name is theirs only once it does. Then
// its host makes the homeserver from it (worker/imports/import-job.ts).

/** Every part but the last has exactly this size; a browser hashes and sends one at a time. */
export const IMPORT_PART_SIZE = BACKUP_PART_SIZE;
export const UNFINISHED_IMPORT: ServerImportStatus[] = ["uploading", "uploaded", "importing"];
/** Taken back by its owner, or deleted with it: nothing but the row is left. */
const DISCARDABLE: ServerImportStatus[] = ["uploading", "uploaded"];

const GIB = 1024 ** 3;

const importUnderWay = () => conflict("import_under_way", "An import into this homeserver is under way; finish or cancel it first.");
const noUpload = () => notFound("No import is being uploaded into this homeserver.");

export async function serverImportById(db: Database, id: string): Promise<ServerImport | undefined> {
  const [row] = await db.select().from(serverImports).where(eq(serverImports.id, id));
  return row;
}

/** The server's newest import, whatever its state. */
export async function latestServerImport(db: Database, serverId: string): Promise<ServerImport | undefined> {
  const [row] = await db.select().from(serverImports).where(eq(serverImports.serverId, serverId)).orderBy(desc(serverImports.createdAt)).limit(1);
  return row;
}

/** The server's import that has not ended, if any. */
export async function unfinishedServerImport(db: Database, serverId: string): Promise<ServerImport | undefined> {
  const [row] = await db
    .select()
    .from(serverImports)
    .where(and(eq(serverImports.serverId, serverId), inArray(serverImports.status, UNFINISHED_IMPORT)));
  return row;
}

/** How many parts the archive is sent in. */
export const partCount = (row: Pick<ServerImport, "sizeBytes" | "partSize">) => Math.ceil(row.sizeBytes / row.partSize);

/** Part `partNumber`'s exact size: every part but the last is whole. */
function expectedPartSize(row: ServerImport, partNumber: number): number {
  return partNumber < partCount(row) ? row.partSize : row.sizeBytes - (partCount(row) - 1) * row.partSize;
}

/** The parts received so far, in order: what a resumed upload skips. */
export async function receivedParts(db: Database, importId: string) {
  return db.select().from(serverImportParts).where(eq(serverImportParts.importId, importId)).orderBy(asc(serverImportParts.partNumber));
}

/** The part numbers not among `received`, in order: what is still to send. */
export function partsMissingFrom(row: Pick<ServerImport, "sizeBytes" | "partSize">, received: { partNumber: number }[]): number[] {
  const have = new Set(received.map((part) => part.partNumber));
  return Array.from({ length: partCount(row) }, (_, index) => index + 1).filter((partNumber) => !have.has(partNumber));
}

/** The part numbers still to send, in order. */
export async function missingParts(db: Database, row: ServerImport): Promise<number[]> {
  return partsMissingFrom(row, await receivedParts(db, row.id));
}

/** What an import's view shows besides its row: the parts received and the job making the homeserver from it. */
export async function importProgress(db: Database, row: ServerImport) {
  return { received: await receivedParts(db, row.id), job: row.jobId ? ((await getJob(db, row.jobId)) ?? null) : null };
}

/** Only a homeserver on its owner's own domain that waits for its delegation can be made from an archive. */
function requireImportable(server: Server): asserts server is Server & { serverName: string } {
  if (server.status !== "awaiting_delegation" || !server.serverName) {
    throw conflict(
      "invalid_state",
      "A homeserver is imported into a new one on your own domain, before it is set up: create one with your domain as its server name, then import.",
    );
  }
}

/**
 * Starts an upload of `sizeBytes` into a waiting homeserver on its owner's own domain; the archive
 * must fit the plan's storage. One import per server is under way at a time (a partial unique
 * index settles races).
 */
export async function startServerImport(ctx: WorkContext, user: User, serverId: string, sizeBytes: number): Promise<ServerImport> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  requireImportable(server);
  const storageGiB = planById(server.planId)?.resources.storageGiB ?? 0;
  const limit = Math.min(storageGiB * GIB, IMPORT_PART_SIZE * BACKUP_MAX_PARTS);
  if (sizeBytes > limit) {
    throw new ApiError(413, "archive_too_large", `The archive is ${sizeBytes} bytes; this plan's homeserver holds at most ${limit} bytes (${storageGiB} GiB).`);
  }
  if (await unfinishedServerImport(ctx.db, server.id)) throw importUnderWay();

  const id = crypto.randomUUID();
  const r2Key = `server-imports/${server.id}/${id}`;
  const upload = await ctx.env.BACKUPS.createMultipartUpload(r2Key);
  const row: ServerImport = {
    id,
    serverId: server.id,
    userId: user.id,
    status: "uploading",
    r2Key,
    uploadId: upload.uploadId,
    partSize: IMPORT_PART_SIZE,
    sizeBytes,
    wrappedPassphrase: null,
    jobId: null,
    error: null,
    counts: null,
    createdAt: ctx.now,
    uploadedAt: null,
    finishedAt: null,
  };
  try {
    await ctx.db.batch([
      ctx.db.insert(serverImports).values(row),
      audit(ctx.db, ctx.now, `user:${user.id}`, "import.started", server.id, { importId: id, sizeBytes }),
    ]);
  } catch (error) {
    await upload.abort();
    if (String(error).includes("UNIQUE")) throw importUnderWay();
    throw error;
  }
  return row;
}

/** The server's import being uploaded, for its owner; otherwise a 404 (another account's server is a 404 before this). */
async function uploadingImport(ctx: WorkContext, user: User, serverId: string): Promise<ServerImport> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  const row = await unfinishedServerImport(ctx.db, server.id);
  if (!row) throw noUpload();
  if (row.status !== "uploading") throw conflict("import_uploaded", "This import's upload is complete; it takes no more parts.");
  return row;
}

/**
 * Streams one part into R2 and records it; a part sent again replaces it. Its size must be exact,
 * and when the browser sent the part's SHA-256 the bytes that arrived must have it.
 */
export async function receiveImportPart(
  ctx: WorkContext,
  user: User,
  serverId: string,
  part: { partNumber: number; body: ReadableStream<Uint8Array> | null; size: number; sha256?: string },
): Promise<{ partNumber: number; size: number; sha256: string }> {
  const row = await uploadingImport(ctx, user, serverId);
  const { partNumber, body, size } = part;
  if (partNumber > partCount(row)) throw badRequest("invalid_part_number", `This archive is sent in ${partCount(row)} part(s).`);
  const expected = expectedPartSize(row, partNumber);
  if (!body || size !== expected) throw badRequest("invalid_part_size", `Part ${partNumber} has ${expected} bytes, not ${size}.`);
  const forget = () => ctx.db.delete(serverImportParts).where(and(eq(serverImportParts.importId, row.id), eq(serverImportParts.partNumber, partNumber)));
  const { sha256, etag } = await streamPart(ctx.env.BACKUPS, row, partNumber, body, size, forget);
  if (part.sha256 !== undefined && part.sha256 !== sha256) {
    await forget();
    throw badRequest("part_corrupted", `Part ${partNumber} did not arrive as it was sent (its SHA-256 differs); send it again.`);
  }
  const received = { importId: row.id, partNumber, size, sha256, etag, uploadedAt: ctx.now };
  await ctx.db
    .insert(serverImportParts)
    .values(received)
    .onConflictDoUpdate({ target: [serverImportParts.importId, serverImportParts.partNumber], set: { size, sha256, etag, uploadedAt: ctx.now } });
  return { partNumber, size, sha256 };
}

/**
 * Completes the upload once every part arrived: R2 assembles the archive, and the passphrase typed
 * for a Berth export is kept wrapped until the job takes it. The import then waits for the domain's
 * delegation check, which is asked for now unless one is under way: a pass makes the homeserver
 * from the archive (provisionAwaitingServer).
 */
export async function completeServerImport(ctx: WorkContext, user: User, serverId: string, passphrase: string | undefined): Promise<ServerImport> {
  const row = await uploadingImport(ctx, user, serverId);
  const missing = await missingParts(ctx.db, row);
  if (missing.length > 0) throw conflict("parts_missing", `Part(s) ${missing.slice(0, 20).join(", ")} of ${partCount(row)} have not arrived yet.`);
  const parts = await receivedParts(ctx.db, row.id);
  await ctx.env.BACKUPS.resumeMultipartUpload(row.r2Key, row.uploadId).complete(parts.map(({ partNumber, etag }) => ({ partNumber, etag })));
  const wrappedPassphrase = passphrase ? await wrapPassphrase(ctx.config.backupKeyWrappingSecret, "import", row.id, passphrase) : null;
  const [uploaded] = await ctx.db
    .update(serverImports)
    .set({ status: "uploaded", wrappedPassphrase, uploadedAt: ctx.now })
    .where(and(eq(serverImports.id, row.id), eq(serverImports.status, "uploading")))
    .returning();
  if (!uploaded) throw conflict("invalid_state", "The import changed meanwhile; reload it.");
  await audit(ctx.db, ctx.now, `user:${user.id}`, "import.uploaded", serverId, {
    importId: row.id,
    sizeBytes: row.sizeBytes,
    encrypted: passphrase !== undefined,
  });
  const server = await ownedServer(ctx.db, user.id, serverId);
  if (
    server.status === "awaiting_delegation" &&
    server.hostId &&
    server.serverName &&
    !(await checkJobUnderWay(ctx, server.id, "homeserver.delegation_check"))
  ) {
    await requestDelegationCheck(ctx, { ...server, hostId: server.hostId, serverName: server.serverName });
  }
  return uploaded;
}

/** Whatever R2 holds of an import that did not become a homeserver is deleted, and its row says why. */
async function discard(ctx: WorkContext, row: ServerImport, status: "cancelled" | "failed", error: string | null): Promise<ServerImport | undefined> {
  const [discarded] = await ctx.db
    .update(serverImports)
    .set({ status, error, wrappedPassphrase: null, finishedAt: ctx.now })
    .where(and(eq(serverImports.id, row.id), inArray(serverImports.status, status === "cancelled" ? DISCARDABLE : UNFINISHED_IMPORT)))
    .returning();
  if (!discarded) return undefined;
  await ctx.db.delete(serverImportParts).where(eq(serverImportParts.importId, row.id));
  if (row.status === "uploading") await ctx.env.BACKUPS.resumeMultipartUpload(row.r2Key, row.uploadId).abort();
  await ctx.env.BACKUPS.delete(row.r2Key);
  return discarded;
}

/** Its owner takes an import back before its job started: nothing of the archive is kept. */
export async function cancelServerImport(ctx: WorkContext, user: User, serverId: string): Promise<ServerImport> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  const row = await unfinishedServerImport(ctx.db, server.id);
  if (!row) throw noUpload();
  if (row.status === "importing") throw conflict("import_running", "The homeserver is being made from this archive now; it cannot be cancelled.");
  const cancelled = await discard(ctx, row, "cancelled", null);
  if (!cancelled) throw conflict("invalid_state", "The import changed meanwhile; reload it.");
  await audit(ctx.db, ctx.now, `user:${user.id}`, "import.cancelled", server.id, { importId: row.id });
  return cancelled;
}

/** A waiting homeserver deleted (by its owner, or lapsed): its archive goes with it. */
export async function discardImportOf(ctx: WorkContext, serverId: string): Promise<void> {
  const row = await unfinishedServerImport(ctx.db, serverId);
  if (row && DISCARDABLE.includes(row.status)) await discard(ctx, row, "cancelled", null);
}

/** The import's job ended without a homeserver: the archive is deleted and the row keeps why. */
export async function failServerImport(ctx: WorkContext, row: ServerImport, reason: string): Promise<ServerImport | undefined> {
  return discard(ctx, row, "failed", reason.slice(0, 1000));
}

/** Whether the server's delegation passing should make it from an archive, wait for one, or provision it empty. */
export async function importAwaited(db: Database, serverId: string): Promise<ServerImport | undefined> {
  const row = await unfinishedServerImport(db, serverId);
  return row && DISCARDABLE.includes(row.status) ? row : undefined;
}
