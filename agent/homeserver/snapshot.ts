// homeserver.backup and homeserver.restore: a server's consistent snapshot
// streamed out encrypted, and one streamed back in beside the live data and
// swapped in only once it is complete (or everything swapped back).
import { createReadStream, mkdirSync, rmSync, statfsSync } from "node:fs";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import type { BackupCounts } from "../../protocol/jobs.ts";
import { localMediaFiles, DUMP_FILE, type ArchiveFile } from "../backup/archive.ts";
import { backupStream, restoreStream } from "../backup/backup.ts";
import type { UploadResult } from "../backup/transfer.ts";
import { errorMessage } from "../log.ts";
import type { StreamingExec } from "../runtime/docker.ts";
import { HOMESERVER_CONFIG_FILE, LOG_CONFIG_FILE, MEDIA_STORE_DIR, SYNAPSE_PORT } from "./config.ts";
import type { HomeserverCore, OperationContext, RunningResult } from "./core.ts";
import { restoreStaging, type HomeserverNames, type HomeserverPaths } from "./names.ts";
import type { HomeserverRecord } from "./records.ts";
import { dropReplaced, prepareRestoredTree, restoredFiles, swapBack, swapIn } from "./restore-files.ts";
import { POSTGRES_DB, POSTGRES_USER, SECRET_FILES, signingKeyFileName } from "./secrets.ts";
import { ensureServiceAccount, keepRotatedCredentials, rotateInRestoredDatabase } from "./service-account.ts";
import { baseUrl, waitForClientApi } from "./synapse-api.ts";

export const PG_DUMP = [
  "pg_dump",
  "--format=custom",
  "--exclude-table-data=e2e_one_time_keys_json",
  "-h",
  "/run/postgresql",
  "-U",
  POSTGRES_USER,
  "-d",
  POSTGRES_DB,
];
const PSQL = ["psql", "-h", "/run/postgresql", "-U", POSTGRES_USER, "-d", POSTGRES_DB, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"];
/** The rows a backup's manifest counts; a restore verification counts the same way (agent/checks/restore-verify.ts). */
export const COUNT_ROWS_SQL = "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM rooms), (SELECT count(*) FROM events);";
/** How a dump is restored into a fresh database (a restore, its verification, an import): as Synapse's user, whoever owned it before. */
export const PG_RESTORE = ["pg_restore", "--exit-on-error", "--no-owner", "--role", POSTGRES_USER, "-h", "/run/postgresql", "-U", POSTGRES_USER];

/**
 * A consistent snapshot, streamed: pg_dump (one transaction; one-time keys'
 * data left out, as Synapse's backup guide says), the local media, the
 * signing key, configuration and secrets → tar → zstd → age to the server's
 * recipient → `upload`. Nothing is held whole in memory or written to disk.
 * pg_dump failing part-way fails the archive, so the upload is aborted.
 */
export function backup(
  core: HomeserverCore,
  serverId: string,
  job: { backupId: string; recipient: string },
  upload: (ciphertext: Readable) => Promise<UploadResult>,
  ctx: OperationContext,
): Promise<UploadResult & { serverId: string; backupId: string; counts: BackupCounts }> {
  return core.serialised(serverId, async () => {
    const record = core.requireRecord(serverId);
    const { names, paths, step } = core.operation(serverId, ctx, { backupId: job.backupId });
    step(0.05, "making sure PostgreSQL runs");
    let mediaFiles = 0;
    const { counted, result } = await core.withPostgres(names, ctx, async () => {
      step(0.1, "counting users, rooms and events in the snapshot, then dumping it, archiving, compressing, encrypting and uploading");
      let snapshot: Awaited<ReturnType<typeof countedSnapshot>> | undefined;
      try {
        const dump = await lockedDump(async () => {
          await snapshot?.release();
          snapshot = await countedSnapshot(core, names);
          return core.runtime.execStreaming(names.postgres, [...PG_DUMP, `--snapshot=${snapshot.id}`], { env: ["PGPASSFILE=/run/secrets/pgpass"] });
        });
        const files = snapshotFiles(record, paths);
        const ciphertext = backupStream({
          manifest: {
            format: 1,
            serverId,
            serverName: record.serverName,
            createdAt: new Date().toISOString(),
            synapseImage: record.images.synapse,
            postgresImage: record.images.postgres,
            entries: ["database", "synapse", "secrets"],
          },
          dump,
          files,
          onArchived: (file) => {
            if (file.media) mediaFiles++;
          },
          recipient: job.recipient,
        });
        return { counted: snapshot!.counts, result: await upload(ciphertext) };
      } finally {
        await snapshot?.release();
      }
    });
    const counts: BackupCounts = { ...counted, mediaFiles };
    step(1, `uploaded ${result.parts.length} part${result.parts.length === 1 ? "" : "s"}, ${result.size} bytes: ${countsText(counts)}`);
    return { serverId, backupId: job.backupId, counts, ...result };
  });
}

/** Users, rooms and events in a server's database, counted as a backup's manifest counts them. */
export async function countRows(core: HomeserverCore, names: HomeserverNames): Promise<Omit<BackupCounts, "mediaFiles">> {
  const counted = await core.psql(names, COUNT_ROWS_SQL, 120_000);
  const [users, rooms, events] = counted.stdout.trim().split("|").map(Number);
  if (counted.exitCode !== 0 || ![users, rooms, events].every((n) => Number.isSafeInteger(n))) {
    throw new Error(`counting the rows failed: ${(counted.stderr || counted.stdout).trim().slice(0, 300)}`);
  }
  return { users: users!, rooms: rooms!, events: events! };
}

/** A backup's counts in words, for progress and evidence. */
export function countsText(counts: BackupCounts): string {
  return `${counts.users} users, ${counts.rooms} rooms, ${counts.events} events, ${counts.mediaFiles} media files`;
}

/**
 * A snapshot of the database held open by a psql session (a repeatable-read transaction that
 * exported it) with its rows counted in it: pg_dump --snapshot dumps exactly what was counted,
 * however busy Synapse is. `release` ends the transaction once the dump is done.
 */
async function countedSnapshot(
  core: HomeserverCore,
  names: HomeserverNames,
): Promise<{ id: string; counts: Omit<BackupCounts, "mediaFiles">; release: () => Promise<void> }> {
  const input = new PassThrough();
  const session = await core.runtime.execStreaming(names.postgres, PSQL, { stdin: input, env: ["PGPASSFILE=/run/secrets/pgpass"] });
  const release = async () => {
    input.end("COMMIT;\n");
    const { exitCode, stderr } = await session.finished;
    if (exitCode !== 0) throw new Error(`the snapshot's psql session exited with ${exitCode}: ${stderr.trim().slice(-300)}`);
  };
  input.write(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n${COUNT_ROWS_SQL}\n`);
  let output = "";
  const lines = await new Promise<string[]>((resolve, reject) => {
    session.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8");
      const complete = output.split("\n").slice(0, -1);
      if (complete.length >= 2) resolve(complete);
    });
    session.stdout.on("end", () => reject(new Error(`counting the snapshot's rows failed${output.trim() ? `: ${output.trim().slice(0, 300)}` : ""}`)));
    session.stdout.on("error", reject);
  }).catch(async (error: unknown) => {
    input.end();
    // psql's own words (a database that is gone, say) are what an operator needs
    const { stderr } = await session.finished.catch(() => ({ stderr: "" }));
    throw new Error(`${errorMessage(error)}${stderr.trim() ? `: ${stderr.trim().slice(-300)}` : ""}`);
  });
  const [id, row] = lines;
  const [users, rooms, events] = (row ?? "").split("|").map(Number);
  if (!id || !/^[0-9A-F-]+$/.test(id) || ![users, rooms, events].every((n) => Number.isSafeInteger(n))) {
    await release().catch(() => undefined);
    throw new Error(`counting the snapshot's rows gave ${JSON.stringify(lines)}`);
  }
  return { id, counts: { users: users!, rooms: rooms!, events: events! }, release };
}

/**
 * Restores a backup of this server: decrypted and extracted into a staging
 * directory first (a wrong key, a corrupted or truncated backup fails here,
 * with the server untouched), the dump restored into a fresh database beside
 * the live one; only then is Synapse stopped, the databases swapped by name,
 * media, signing key and secrets put back, and Synapse started and checked.
 * If that fails, everything is swapped back and Synapse runs as before.
 */
export function restore(
  core: HomeserverCore,
  serverId: string,
  job: { backupId: string; identity: string },
  download: () => Promise<Readable>,
  ctx: OperationContext,
): Promise<RunningResult & { backupId: string; restoredFrom: string }> {
  return core.serialised(serverId, async () => {
    let record = core.requireRecord(serverId);
    const { names, paths, log, step } = core.operation(serverId, ctx, { backupId: job.backupId });
    if (record.suspended) throw new Error(`homeserver ${serverId} is suspended: resume it before restoring`);
    await core.recoverInterruptedUpgrade(record, names, log);
    record = core.requireRecord(serverId);
    const staging = restoreStaging(paths, job.backupId);
    rmSync(staging, { recursive: true, force: true });
    mkdirSync(join(paths.root, "restore"), { mode: 0o700, recursive: true });

    step(0.05, "downloading, decrypting and unpacking the backup");
    const extracted = await restoreStream(await download(), job.identity, staging).catch((error: unknown) => {
      rmSync(staging, { recursive: true, force: true });
      throw outOfRoom(error, paths);
    });
    try {
      if (extracted.manifest.serverName !== record.serverName) {
        throw new Error(`the backup is of ${extracted.manifest.serverName}, not ${record.serverName}: refusing to restore it here`);
      }
      prepareRestoredTree(staging, record.uid);
      const fresh = `${POSTGRES_DB}_restore_${job.backupId.replaceAll("-", "").slice(0, 12)}`;
      const previous = `${POSTGRES_DB}_before_${job.backupId.replaceAll("-", "").slice(0, 12)}`;

      step(0.4, "restoring the database into a fresh one beside the live one");
      // The service account gets a new token in it: none the backup holds works once it is live.
      let rotated: Awaited<ReturnType<typeof rotateInRestoredDatabase>>;
      await core.runtime.startContainer(names.postgres);
      await core.waitPostgres(names, ctx.signal);
      await maintenance(core, names, `DROP DATABASE IF EXISTS ${fresh};`);
      await maintenance(core, names, `CREATE DATABASE ${fresh} OWNER ${POSTGRES_USER} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C';`);
      try {
        const restoring = await core.runtime.execStreaming(names.postgres, [...PG_RESTORE, `--dbname=${fresh}`], {
          stdin: createReadStream(join(staging, DUMP_FILE)),
          env: ["PGPASSFILE=/run/secrets/pgpass"],
        });
        for await (const _ of checkedOutput(restoring, "pg_restore"));
        const truncated = await core.psql(names, "TRUNCATE e2e_one_time_keys_json;", 60_000, fresh);
        if (truncated.exitCode !== 0) throw new Error(`truncating one-time keys failed: ${truncated.stderr.trim().slice(0, 300)}`);
        rotated = await rotateInRestoredDatabase(core, record, names, fresh);
      } catch (error) {
        await maintenance(core, names, `DROP DATABASE IF EXISTS ${fresh};`).catch(() => undefined);
        throw outOfRoom(error, paths);
      }

      step(0.7, "stopping Synapse and swapping in the restored data");
      await core.runtime.stopContainer(names.synapse, core.timeouts.stopSeconds);
      const swap = restoredFiles(record.serverName, paths, staging);
      try {
        await maintenance(core, names, `ALTER DATABASE ${POSTGRES_DB} RENAME TO ${previous};`);
        await maintenance(core, names, `ALTER DATABASE ${fresh} RENAME TO ${POSTGRES_DB};`);
        swapIn(swap);
        step(0.8, "starting Synapse on the restored data");
        await core.runtime.startContainer(names.synapse);
        await core.waitSynapse(names, core.timeouts.synapseHealthyMs, ctx.signal);
        await waitForClientApi(baseUrl(await core.synapseAddress(names), SYNAPSE_PORT), core.timeouts.clientApiMs, ctx.signal);
      } catch (error) {
        if (ctx.signal.aborted) throw error;
        log.warn("the restored homeserver did not come up: putting the previous data back", { error: errorMessage(error) });
        await core.runtime.stopContainer(names.synapse, core.timeouts.stopSeconds);
        swapBack(swap);
        dropReplaced(staging);
        await maintenance(core, names, `ALTER DATABASE IF EXISTS ${POSTGRES_DB} RENAME TO ${fresh};`).catch(() => undefined);
        await maintenance(core, names, `ALTER DATABASE ${previous} RENAME TO ${POSTGRES_DB};`);
        await maintenance(core, names, `DROP DATABASE IF EXISTS ${fresh};`);
        await core.runtime.startContainer(names.synapse);
        await core.waitSynapse(names, core.timeouts.synapseHealthyMs, ctx.signal);
        throw new Error(`restoring backup ${job.backupId} failed: ${errorMessage(error)}; the previous data is back and running`);
      }

      step(0.9, "dropping the data the restore replaced");
      if (rotated) keepRotatedCredentials(paths, rotated);
      await maintenance(core, names, `DROP DATABASE IF EXISTS ${previous};`);
      dropReplaced(staging);
      // Registers the account when the backup predates it; the restore is done either way (the next job tries again).
      await ensureServiceAccount(core, record, names, paths, ctx, log).catch((error: unknown) =>
        log.warn("the service account is not ready after the restore; the next administration job sets it up", { error: errorMessage(error) }),
      );
      const ip = await core.synapseAddress(names);
      await core.applyProxy(record, ip, log);
      const result = await core.runningResult(record, names, ip, ctx.signal);
      step(1, `restored from the backup of ${extracted.manifest.createdAt}`);
      return { ...result, backupId: job.backupId, restoredFrom: extracted.manifest.createdAt };
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  });
}

/**
 * A restore that ran out of the server's storage quota, said so (other errors as they are): the
 * extracted backup and the restored database sit beside the live data, inside the quota, until the
 * swap (renames within one filesystem, so that a failure swaps everything back).
 */
function outOfRoom(error: unknown, paths: HomeserverPaths): unknown {
  if (!/ENOSPC|No space left on device|could not extend file/i.test(errorMessage(error))) return error;
  const fs = statfsSync(paths.root);
  return new Error(
    `the backup does not fit beside the live data in the homeserver's storage (${Math.floor((fs.blocks * fs.bsize) / 2 ** 20)} MiB): ` +
      `a restore needs room for both until it swaps them; nothing was changed. Raise the plan's storage, then restore again (${errorMessage(error).slice(0, 200)})`,
  );
}

/** SQL as Synapse's (owner) role, connected to the maintenance database: for CREATE/ALTER/DROP DATABASE. */
async function maintenance(core: HomeserverCore, names: HomeserverNames, sql: string): Promise<void> {
  const result = await core.psql(names, sql, 120_000, "postgres");
  if (result.exitCode !== 0) throw new Error(`${sql.split(" ").slice(0, 3).join(" ")} failed: ${result.stderr.trim().slice(0, 300)}`);
}

/** How often pg_dump is started again when a table went away before it could lock it. */
const DUMP_ATTEMPTS = 3;

/**
 * pg_dump's output, once it holds its locks. It lists the tables its snapshot sees, then locks
 * each by name; one dropped in between (Synapse drops a background update's `_temp_*` tables when
 * the update ends, often just after a homeserver is made) fails it with "does not exist" before it
 * writes a byte. Then nothing has been read yet, and `start` is called again for a new snapshot.
 */
export async function lockedDump(start: () => Promise<StreamingExec>): Promise<AsyncGenerator<Buffer>> {
  for (let attempt = 1; ; attempt++) {
    const output = checkedOutput(await start(), "pg_dump");
    try {
      const first = await output.next();
      return (async function* () {
        if (!first.done) yield first.value;
        yield* output;
      })();
    } catch (error) {
      if (attempt >= DUMP_ATTEMPTS || !/does not exist[\s\S]*Query was: LOCK TABLE/.test(errorMessage(error))) throw error;
    }
  }
}

/** A command's output; at its end, its exit status is checked (a failure errors the stream that reads it). */
export async function* checkedOutput(exec: StreamingExec, what: string): AsyncGenerator<Buffer> {
  yield* exec.stdout as AsyncIterable<Buffer>;
  const { exitCode, stderr } = await exec.finished;
  if (exitCode !== 0) throw new Error(`${what} exited with ${exitCode}: ${stderr.trim().slice(-500)}`);
}

/** What a backup holds besides the dump: signing key, configuration, secrets, and the local media (not remote caches). */
async function* snapshotFiles(record: HomeserverRecord, paths: HomeserverPaths): AsyncGenerator<ArchiveFile> {
  for (const name of [signingKeyFileName(record.serverName), HOMESERVER_CONFIG_FILE, LOG_CONFIG_FILE]) {
    yield { name: `synapse/${name}`, path: join(paths.synapse, name) };
  }
  for (const name of Object.values(SECRET_FILES)) yield { name: `secrets/${name}`, path: join(paths.secrets, name) };
  yield* localMediaFiles(join(paths.synapse, MEDIA_STORE_DIR), `synapse/${MEDIA_STORE_DIR}`);
}
