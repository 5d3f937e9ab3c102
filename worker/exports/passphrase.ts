import { eq } from "drizzle-orm";
import { checkDeliveredJobPayload } from "../../protocol/jobs";
import type { WorkContext } from "../context";
import { utf8 } from "../crypto/bytes";
import { cachedWrappingKey, unwrapSecret, wrapSecret } from "../crypto/wrap";
import type { Database } from "../db/client";
import { jobs, type Job } from "../db/schema";
import { badRequest } from "../errors";
import { payloadOf } from "../fleet/jobs";

/**
 * A customer's export passphrase (and the one they type for an import) is the only key to their whole homeserver once the file leaves
 * us: it rests in D1 only wrapped (under BACKUP_KEY_WRAPPING_SECRET, bound to its export), is
 * unwrapped only onto the host's connection as the job is sent, and is erased when the job ends.
 */
export const MIN_PASSPHRASE_LENGTH = 12;
export const MAX_PASSPHRASE_LENGTH = 1024;
const MIN_DISTINCT_CHARACTERS = 5;

const wrappingKey = (secret: string) => cachedWrappingKey(secret, "berth export passphrase wrap v1");

/** Refuses what a guesser tries first; the message never repeats the passphrase. */
export function requireStrongPassphrase(passphrase: string): void {
  const characters = [...passphrase];
  if (characters.length === 0) throw badRequest("weak_passphrase", "Choose a passphrase: the export is encrypted with it.");
  if (characters.length > MAX_PASSPHRASE_LENGTH) throw badRequest("weak_passphrase", `A passphrase is at most ${MAX_PASSPHRASE_LENGTH} characters.`);
  if (characters.length < MIN_PASSPHRASE_LENGTH || new Set(characters).size < MIN_DISTINCT_CHARACTERS) {
    throw badRequest(
      "weak_passphrase",
      `Choose a stronger passphrase: at least ${MIN_PASSPHRASE_LENGTH} characters (a few unrelated words work well), not one character repeated.`,
    );
  }
}

/** What a passphrase is wrapped for: it unwraps only for the same export or import. */
type PassphraseUse = "export" | "import";

export async function wrapPassphrase(secret: string, use: PassphraseUse, id: string, passphrase: string): Promise<string> {
  return wrapSecret(await wrappingKey(secret), `${use}:${id}`, utf8(passphrase));
}

export async function unwrapPassphrase(secret: string, use: PassphraseUse, id: string, wrapped: string): Promise<string> {
  return new TextDecoder().decode(await unwrapSecret(await wrappingKey(secret), `${use}:${id}`, wrapped));
}

/**
 * A full export's or an import's job payload as it is sent: the passphrase unwrapped onto the
 * host's authenticated connection. Once erased, a full export's stored payload goes as it is and
 * the agent refuses it (the job fails); an import sent without one carries none.
 */
export async function deliveredPassphrasePayload({ config }: WorkContext, job: Job): Promise<unknown> {
  const exported = payloadOf(job, "homeserver.full_export");
  if (exported) {
    if (!exported.wrappedPassphrase) return job.payload;
    const { wrappedPassphrase, ...rest } = exported;
    const passphrase = await unwrapPassphrase(config.backupKeyWrappingSecret, "export", exported.exportId, wrappedPassphrase);
    return checkDeliveredJobPayload("homeserver.full_export", { ...rest, passphrase });
  }
  const imported = payloadOf(job, "homeserver.import");
  if (!imported) return job.payload;
  const { wrappedPassphrase, ...rest } = imported;
  if (!wrappedPassphrase) return checkDeliveredJobPayload("homeserver.import", rest);
  const passphrase = await unwrapPassphrase(config.backupKeyWrappingSecret, "import", imported.importId, wrappedPassphrase);
  return checkDeliveredJobPayload("homeserver.import", { ...rest, passphrase });
}

/** Once the job has ended (done, failed or past its deadline), nothing of the passphrase remains. */
export async function erasePassphrase(db: Database, job: Job): Promise<void> {
  const stored = payloadOf(job, "homeserver.full_export") ?? payloadOf(job, "homeserver.import");
  if (!stored?.wrappedPassphrase) return;
  await db
    .update(jobs)
    .set({ payload: { ...stored, wrappedPassphrase: null } })
    .where(eq(jobs.id, job.id));
}
