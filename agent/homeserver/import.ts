// homeserver.import: a new homeserver made from its owner's archive (a Berth full export or a
// self-hosted Synapse's archive: backup/import-archive.ts), the way provision makes one, but with
// the archive's signing key and media in place and its database restored before Synapse first
// starts, which then migrates it. The archive must be of the spec's server name, its schema one
// our Synapse upgrades, its users within the plan. Whatever fails, nothing of the import stays on
// the host, and the job fails with a sentence its owner is shown (no path, no secret, never the
// passphrase); an import the agent's death cut short is removed and made again when its job, or a
// new import of its server, comes.
import { importRefusalText } from "../../protocol/import-refusals.ts";
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { cp } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type { BackupCounts, DeliveredJobPayload, JobResult } from "../../protocol/jobs.ts";
import { DUMP_FILE, localMediaFiles } from "../backup/archive.ts";
import { ImportRefused, unpackImportArchive } from "../backup/import-archive.ts";
import { TransferError } from "../backup/transfer.ts";
import { errorMessage } from "../log.ts";
import { ContainerFailedError, HealthTimeoutError } from "../runtime/docker.ts";
import { chownTreeSync } from "../owned-directories.ts";
import { MEDIA_STORE_DIR } from "./config.ts";
import type { HomeserverCore, Operation, OperationContext } from "./core.ts";
import { removeHomeserver } from "./destroy.ts";
import { importStaging, type HomeserverNames, type HomeserverPaths } from "./names.ts";
import { adminLocalpart, makeHomeserver, type HomeserverSource, type ProvisionSpec } from "./provision.ts";
import type { HomeserverRecord } from "./records.ts";
import { parseSigningKey, POSTGRES_DB, signingKeyFileName } from "./secrets.ts";
import { keepRotatedCredentials, rotateInRestoredDatabase } from "./service-account.ts";
import { checkedOutput, countRows, countsText, PG_RESTORE } from "./snapshot.ts";
import { checkImportableSchema, databaseSchema, imageSchema } from "./synapse-schema.ts";

type ImportJob = DeliveredJobPayload<"homeserver.import">;
type ImportResult = JobResult<"homeserver.import">;

const GiB = 1024 ** 3;

/** Hidden from the plan's user limit as the user-limit module hides it (user-limit-module.ts). */
const USABLE_USERS_SQL = "deactivated = 0 AND is_guest = 0 AND (user_type IS NULL OR user_type <> 'support')";

export function importHomeserver(core: HomeserverCore, job: ImportJob, download: () => Promise<Readable>, ctx: OperationContext): Promise<ImportResult> {
  const { spec, importId } = job;
  return core.serialised(spec.serverId, async () => {
    const operation = core.operation(spec.serverId, ctx, { importId });
    const { paths, log, step } = operation;
    const staging = importStaging(paths, importId);
    if (core.records.read(spec.serverId) || existsSync(paths.root) || existsSync(paths.storageImage)) {
      // What a failure removes must be the import's alone. An import's staging directory is made
      // before anything of the homeserver and removed at its end, so one is there only when an
      // import of this server was cut short (the agent died): this one, or an earlier one whose job
      // expired meanwhile and whose owner uploaded again. What is on the host is then that import's, half made.
      const interrupted = stagedImports(paths);
      if (interrupted.length === 0) throw new Error(`homeserver ${spec.serverId} is on this host already: an import makes a new one`);
      log.warn(
        `the interrupted import ${interrupted.join(", ")} of homeserver ${spec.serverId} (the agent stopped during it) is being cleaned up and the import started again`,
      );
      await removeWhatItMade(core, spec.serverId, operation);
    }
    let restored = false;
    try {
      step(0.02, "downloading, decrypting and unpacking the archive");
      // A server's imports run one at a time: any staging of it here is a dead agent's.
      rmSync(paths.imports, { recursive: true, force: true });
      mkdirSync(paths.imports, { recursive: true, mode: 0o700 });
      const archive = await unpackImportArchive(await download(), job.passphrase, staging, spec.resources.storageGiB * GiB);
      step(0.2, `checking the archive (${archive.kind === "berth-export" ? "a Berth export" : "a Synapse archive"}) of ${archive.serverName}`);
      if (archive.serverName !== spec.serverName) throw new ImportRefused(`the archive is of ${archive.serverName}, not ${spec.serverName}`);
      checkSigningKey(staging, spec.serverName);

      let found = 0;
      const source: HomeserverSource = {
        placeFiles: (target, uid) => placeFiles(staging, spec.serverName, target, uid),
        restoreDatabase: async (record, names) => {
          step(0.45, "restoring the archive's database");
          await restoreDatabase(core, staging, names, spec.resources.storageGiB);
          found = checkImportableSchema(await databaseSchema(core, names), await imageSchema(core, record, names, paths, ctx.signal));
          await prepareDatabase(core, record, names, paths, spec.maxUsers);
          restored = true;
        },
      };
      // provision's steps, within this job's progress
      const made = await makeHomeserver(core, spec, { ...operation, step: (progress, message) => step(0.25 + progress * 0.65, message) }, ctx, source);

      step(0.92, "counting users, rooms, events and media files");
      const names = core.names(spec.serverId);
      const counts: BackupCounts = { ...(await countRows(core, names)), mediaFiles: await countLocalMedia(paths) };
      const after = await databaseSchema(core, names);
      if (after === undefined) throw new Error("the database has no schema_version table after Synapse's migrations");
      step(1, `imported: ${countsText(counts)}; schema ${found} → ${after}`);
      return { ...made, importId, counts, schema: { found, after } };
    } catch (error) {
      log.warn("the import failed: removing everything it made", { error: errorMessage(error) });
      await removeWhatItMade(core, spec.serverId, operation).catch((cleanup: unknown) =>
        log.error("removing what the failed import made failed; delete the homeserver to finish it", { error: errorMessage(cleanup) }),
      );
      throw new Error(reasonFor(error, spec, { restored, aborted: ctx.signal.aborted }));
    } finally {
      // Its own staging is the only one left: the import began by clearing the server's.
      rmSync(paths.imports, { recursive: true, force: true });
    }
  });
}

/** The ids of the server's imports whose staging directories are on the host. */
function stagedImports(paths: HomeserverPaths): string[] {
  return existsSync(paths.imports) ? readdirSync(paths.imports) : [];
}

/** What an import made of its homeserver, removed as homeserver.delete removes it; its uid forgotten even when that fails (a delete, which finishes it, keeps uids). */
async function removeWhatItMade(core: HomeserverCore, serverId: string, operation: Operation): Promise<void> {
  try {
    await removeHomeserver(core, serverId, { ...operation, step: (_progress, message) => operation.log.info(message) });
  } finally {
    core.uids.forget(serverId);
  }
}

/** A signing key Synapse reads; else the import is refused before anything is made. */
function checkSigningKey(staging: string, serverName: string): void {
  try {
    parseSigningKey(readFileSync(join(staging, "synapse", signingKeyFileName(serverName)), "utf8"));
  } catch {
    throw new ImportRefused(`the archive's ${signingKeyFileName(serverName)} is not a Synapse ed25519 signing key`);
  }
}

/** The archive's signing key and media into the new server's synapse/, the uid's (nothing of the tenant runs yet). */
async function placeFiles(staging: string, serverName: string, paths: HomeserverPaths, uid: number): Promise<void> {
  const key = signingKeyFileName(serverName);
  const staged = join(staging, "synapse");
  await cp(join(staged, key), join(paths.synapse, key), { errorOnExist: true, force: false });
  if (existsSync(join(staged, MEDIA_STORE_DIR))) await cp(join(staged, MEDIA_STORE_DIR), join(paths.synapse, MEDIA_STORE_DIR), { recursive: true });
  // the unpacked archive holds directories and regular files only (the tar reader refuses the rest)
  chownTreeSync(paths.synapse, uid);
}

/** The dump into the new server's empty database, as a restore restores one. */
async function restoreDatabase(core: HomeserverCore, staging: string, names: HomeserverNames, storageGiB: number): Promise<void> {
  const restoring = await core.runtime.execStreaming(names.postgres, [...PG_RESTORE, `--dbname=${POSTGRES_DB}`], {
    stdin: createReadStream(join(staging, DUMP_FILE)),
    env: ["PGPASSFILE=/run/secrets/pgpass"],
  });
  try {
    for await (const _ of checkedOutput(restoring, "pg_restore"));
  } catch (error) {
    if (outOfRoom(error)) throw new ImportRefused(`the archive's database does not fit in the plan's storage (${storageGiB} GiB)`);
    const why =
      errorMessage(error)
        .split("\n")
        .findLast((line) => /error/i.test(line)) ?? errorMessage(error).split("\n").at(-1);
    throw new ImportRefused(`the archive's database could not be restored (${why?.trim().slice(0, 300)})`);
  }
}

/**
 * The restored database readied before Synapse starts on it: one-time keys dropped (as a restore
 * does: ones the archive holds may have been handed out since), the service account's tokens from
 * the archive replaced by one only this host knows, and the plan's user limit checked.
 */
async function prepareDatabase(
  core: HomeserverCore,
  record: HomeserverRecord,
  names: HomeserverNames,
  paths: HomeserverPaths,
  maxUsers: number | undefined,
): Promise<void> {
  const truncated = await core.psql(names, "TRUNCATE e2e_one_time_keys_json;", 60_000);
  if (truncated.exitCode !== 0) throw new Error(`truncating one-time keys failed: ${truncated.stderr.trim().slice(0, 300)}`);
  const rotated = await rotateInRestoredDatabase(core, record, names, POSTGRES_DB);
  if (rotated) keepRotatedCredentials(paths, rotated);
  if (maxUsers === undefined) return;
  const admin = `@${adminLocalpart(core)}:${record.serverName}`.replaceAll("'", "''");
  const read = await core.psql(names, `SELECT count(*) FILTER (WHERE ${USABLE_USERS_SQL}), count(*) FILTER (WHERE name = '${admin}') FROM users;`);
  const [users, admins] = read.stdout.trim().split("|").map(Number);
  if (read.exitCode !== 0 || !Number.isSafeInteger(users) || !Number.isSafeInteger(admins)) {
    throw new Error(`counting the archive's users failed: ${(read.stderr || read.stdout).trim().slice(0, 300)}`);
  }
  if (users! > maxUsers) throw new ImportRefused(`the archive's homeserver has ${users} users, more than the plan's limit of ${maxUsers}`);
  if (users === maxUsers && admins === 0) {
    throw new ImportRefused(`the archive's homeserver has ${users} users: with the admin account Berth adds, more than the plan's limit of ${maxUsers}`);
  }
}

/** Local media files, as a backup counts the ones it archives. */
async function countLocalMedia(paths: HomeserverPaths): Promise<number> {
  let files = 0;
  for await (const _ of localMediaFiles(join(paths.synapse, MEDIA_STORE_DIR), MEDIA_STORE_DIR)) files++;
  return files;
}

function outOfRoom(error: unknown): boolean {
  return /ENOSPC|No space left on device|could not extend file/i.test(errorMessage(error));
}

/** Why the import failed, as its owner reads it: the refusal itself, else what went wrong in our words (the details are in the agent's log). */
function reasonFor(error: unknown, spec: ProvisionSpec, { restored, aborted }: { restored: boolean; aborted: boolean }): string {
  // The Worker shows only the sentences of IMPORT_REFUSALS: a refusal worded otherwise reads as the last one below.
  if (error instanceof ImportRefused && importRefusalText(error.message)) return error.message;
  if (aborted) return "the import did not finish in the time it has; nothing of it was kept";
  if (outOfRoom(error)) return `the archive does not fit in the plan's storage (${spec.resources.storageGiB} GiB)`;
  if (error instanceof TransferError) return "the uploaded archive could not be downloaded to the host; nothing of it was kept";
  if (restored && (error instanceof HealthTimeoutError || error instanceof ContainerFailedError))
    return "Synapse did not start on the archive's database (its migrations or its data failed); nothing of it was kept";
  return "the homeserver could not be made on its host; nothing of it was kept";
}
