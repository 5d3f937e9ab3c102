// A backup end to end as one stream each way: tar → zstd → age to back up, and
// age → zstd → tar into a fresh directory to restore. Memory stays bounded by the
// streams' buffers whatever the backup's size (the dump's 8 MiB parts are the
// largest thing held).
import { pipeline, type Readable } from "node:stream";
import { AgeDecryptStream, AgeEncryptStream, type AgeDecryptionKey, type AgePassphraseRecipient } from "./age.ts";
import { archiveStream, restoreArchive, type ArchiveContents, type ExtractedArchive } from "./archive.ts";

export interface BackupOptions extends ArchiveContents {
  /** The homeserver's backup key (age1…): the host can encrypt, never decrypt. Or, for a customer's export, their passphrase. */
  recipient: string | AgePassphraseRecipient;
}

/** Errors reach the caller through the stream pipeline returns (it destroys every stream with the first error). */
const reportedByStream = () => {};

/** The backup's ciphertext (an age file), produced as fast as it is read. Any failure errors the returned stream. */
export function backupStream(options: BackupOptions): Readable {
  return pipeline(archiveStream(options), new AgeEncryptStream(options.recipient), reportedByStream);
}

/**
 * Decrypts (with the backup's identity, or an export's passphrase), decompresses and extracts a
 * backup into targetDir (which must not exist yet). A wrong key, a corrupted, truncated or
 * extended file, an archive that is not a Berth backup, or one whose tar is more than `maxBytes`
 * rejects, and targetDir is gone again.
 */
export async function restoreStream(ciphertext: Readable, key: AgeDecryptionKey, targetDir: string, maxBytes?: number): Promise<ExtractedArchive> {
  return restoreArchive(pipeline(ciphertext, new AgeDecryptStream(key), reportedByStream), targetDir, maxBytes);
}
