import type { BackupCompleteRequest } from "../../protocol/messages";
import type { WorkContext } from "../context";
import { hex } from "../crypto/bytes";
import type { BackupManifestPart, Host } from "../db/schema";
import { ApiError, badRequest, conflict } from "../errors";

/**
 * A file an agent uploads through the Worker in signed parts (a backup, a legal export): an R2
 * multipart upload made by the Worker, whose parts the Worker hashes as it streams them.
 */
export interface AgentUploadContext extends WorkContext {
  host: Host;
  /** Refuses the request after all: its streamed body was not the one signed, so it proves nothing. */
  refuseRequest(reason: "body does not match its signed digest"): Promise<ApiError>;
}

export interface PartUpload {
  r2Key: string;
  uploadId: string;
  partSize: number;
}

/** A part as the Worker received it, with R2's etag that completing the upload needs. */
export interface ReceivedPart extends BackupManifestPart {
  etag: string;
}

/**
 * Streams one part into the multipart upload while hashing it. Every part but the last has exactly
 * the part size, so a short part can be followed by none. `forget` drops the part's record when
 * R2 may hold other bytes under its number than the ones recorded: it must be sent again.
 */
export async function storePart(
  ctx: AgentUploadContext,
  upload: PartUpload,
  recorded: Pick<BackupManifestPart, "partNumber" | "size">[],
  part: { partNumber: number; body: ReadableStream<Uint8Array> | null; size: number; signedSha256: string },
  forget: () => Promise<unknown>,
): Promise<{ sha256: string; etag: string }> {
  const { partNumber, body, size } = part;
  const shortBefore = recorded.some((other) => other.partNumber < partNumber && other.size < upload.partSize);
  const anyAfter = recorded.some((other) => other.partNumber > partNumber);
  if (!body || size < 1 || size > upload.partSize || shortBefore || (size < upload.partSize && anyAfter)) {
    throw badRequest("invalid_part_size", `Every part but the last has exactly ${upload.partSize} bytes, and the last at most that.`);
  }
  const { sha256, etag } = await streamPart(ctx.env.BACKUPS, upload, partNumber, body, size, forget);
  if (sha256 !== part.signedSha256) {
    // R2 now holds these bytes under this number: the part must be sent again.
    await forget();
    throw await ctx.refuseRequest("body does not match its signed digest");
  }
  return { sha256, etag };
}

/**
 * Streams `size` bytes of `body` into R2 as part `partNumber` of the multipart upload, hashing them
 * on the way. A body cut short (its sender's connection dropped) or R2 failing: the part is
 * forgotten, to be sent again.
 */
export async function streamPart(
  bucket: R2Bucket,
  upload: PartUpload,
  partNumber: number,
  body: ReadableStream<Uint8Array>,
  size: number,
  forget: () => Promise<unknown>,
): Promise<{ sha256: string; etag: string }> {
  const digest = new crypto.DigestStream("SHA-256");
  const [toR2, toDigest] = body.tee();
  const multipart = bucket.resumeMultipartUpload(upload.r2Key, upload.uploadId);
  let etag: string;
  try {
    [{ etag }] = await Promise.all([multipart.uploadPart(partNumber, toR2.pipeThrough(new FixedLengthStream(size))), toDigest.pipeTo(digest)]);
  } catch {
    await forget();
    throw new ApiError(503, "part_not_stored", "The part could not be stored; send it again.");
  }
  return { sha256: hex(new Uint8Array(await digest.digest)), etag };
}

/** Why the agent's list of parts is not what the Worker received, or null when it is. */
function manifestProblem(partSize: number, received: BackupManifestPart[], claimed: BackupCompleteRequest): string | null {
  if (claimed.parts.length !== received.length) return `The Worker holds ${received.length} part(s); the list names ${claimed.parts.length}.`;
  for (const [index, part] of received.entries()) {
    const listed = claimed.parts[index]!;
    if (part.partNumber !== index + 1 || listed.partNumber !== index + 1) return "Parts must be numbered from 1 without gaps.";
    if (listed.size !== part.size || listed.sha256 !== part.sha256) return `Part ${part.partNumber} is not what the Worker received.`;
    if (index < received.length - 1 && part.size !== partSize) return `Part ${part.partNumber} is short but not the last.`;
  }
  const total = received.reduce((sum, part) => sum + part.size, 0);
  if (total !== claimed.size) return `The parts add up to ${total} bytes, not ${claimed.size}.`;
  return null;
}

/**
 * Completes the upload once the agent's list matches what was received (in part order), part by
 * part: R2 assembles the object. Returns the manifest's parts.
 */
export async function assembleParts(
  ctx: WorkContext,
  upload: PartUpload,
  received: ReceivedPart[],
  claimed: BackupCompleteRequest,
): Promise<BackupManifestPart[]> {
  const problem = manifestProblem(upload.partSize, received, claimed);
  if (problem) throw conflict("parts_mismatch", problem);
  await ctx.env.BACKUPS.resumeMultipartUpload(upload.r2Key, upload.uploadId).complete(received.map(({ partNumber, etag }) => ({ partNumber, etag })));
  return received.map(({ partNumber, size, sha256 }) => ({ partNumber, size, sha256 }));
}
