// homeserver.full_export: everything a customer needs to run their homeserver
// elsewhere, on stock Synapse and PostgreSQL, encrypted on the host to the
// passphrase they typed (age's scrypt recipient) and uploaded like a backup.
// The archive is a backup's (so an import reads it the same way) without
// Berth's secrets and configuration, which hold our credentials and would let
// its owner step around the plan's limits: the dump, the local media, the
// signing key, the settings a new host needs, and a README saying how.
import { join } from "node:path";
import type { Readable } from "node:stream";
import type { DeliveredJobPayload, JobResult } from "../../protocol/jobs.ts";
import { agePassphraseRecipient } from "../backup/age.ts";
import { DUMP_FILE, localMediaFiles, type ArchiveFile } from "../backup/archive.ts";
import { backupStream } from "../backup/backup.ts";
import type { UploadResult } from "../backup/transfer.ts";
import { MEDIA_STORE_DIR } from "./config.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import type { HomeserverPaths } from "./names.ts";
import { signingKeyFileName } from "./secrets.ts";
import { lockedDump, PG_DUMP } from "./snapshot.ts";

type FullExportJob = Pick<DeliveredJobPayload<"homeserver.full_export">, "exportId" | "passphrase">;
type FullExportResult = JobResult<"homeserver.full_export">;

export const EXPORT_README = "README.md";
export const EXPORT_SETTINGS = "config/homeserver-settings.yaml";

/** The settings of ours a stock homeserver.yaml needs to behave as this server did. */
export function exportSettings(serverName: string): string {
  return [
    "# Merge these into the homeserver.yaml that Synapse generates (see README.md).",
    `server_name: ${JSON.stringify(serverName)}`,
    `signing_key_path: "/data/${signingKeyFileName(serverName)}"`,
    "# Private chats and direct messages were end-to-end encrypted by default:",
    "encryption_enabled_by_default_for_room_type: invite",
    "",
  ].join("\n");
}

/** Step by step, the restore on stock images: what the acceptance test does, in the same order. */
export function exportReadme(serverName: string, createdAt: string): string {
  const key = signingKeyFileName(serverName);
  return `# Your homeserver ${serverName}, exported ${createdAt}

This archive is everything needed to run ${serverName} on your own Synapse with PostgreSQL:

- \`database/pg_dump.part-*\`: the PostgreSQL database, a \`pg_dump --format=custom\` dump split
  into parts; joined in order (\`cat\`), stock \`pg_restore\` reads it.
- \`synapse/${key}\`: the server's signing key. Other servers know ${serverName} by it: keep it secret.
- \`synapse/${MEDIA_STORE_DIR}/\`: the uploaded media (local_content, local_thumbnails).
- \`${EXPORT_SETTINGS}\`: the settings to carry into your homeserver.yaml.
- \`berth-backup.json\`: what the archive holds (the Synapse and PostgreSQL versions it came from).

Use a Synapse at least as new as the one named in berth-backup.json; Synapse upgrades the
database itself when it starts.

## Restore on stock Synapse and PostgreSQL (Docker)

1. Decrypt and unpack the file you downloaded, \`berth-export-<name>-<date>.age\` (you are asked for
   the passphrase you chose when you asked for the export):

       age -d -o export.tar.zst berth-export-*.age
       mkdir export && zstd -dc export.tar.zst | tar -x -C export

2. Start PostgreSQL and create the database the way Synapse requires (C collation, UTF8):

       docker network create matrix
       docker run -d --name synapse-db --network matrix -e POSTGRES_USER=synapse \\
         -e POSTGRES_PASSWORD=<choose one> -e POSTGRES_INITDB_ARGS="--encoding=UTF8 --locale=C" postgres:16

   With --locale=C the default database "synapse" is already right. On an existing server instead:
   \`CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0 OWNER synapse;\`

3. Restore the dump into it:

       cat export/${DUMP_FILE}.part-* | docker exec -i synapse-db \\
         pg_restore --no-owner --role=synapse -U synapse -d synapse --exit-on-error

4. Let Synapse generate its configuration for the same server name:

       docker volume create synapse-data
       docker run --rm -v synapse-data:/data -e SYNAPSE_SERVER_NAME=${serverName} \\
         -e SYNAPSE_REPORT_STATS=no matrixdotorg/synapse generate

5. Put the signing key and the media in place (replacing the generated key) and give them to
   Synapse's user (991 in the official image):

       docker run --rm -v synapse-data:/data -v "$PWD/export/synapse:/export:ro" --entrypoint sh \\
         matrixdotorg/synapse -c 'cp /export/${key} /data/${key} &&
           mkdir -p /data/media_store && cp -r /export/${MEDIA_STORE_DIR}/. /data/media_store/ &&
           chown -R 991:991 /data'

6. Edit /data/homeserver.yaml in the volume: replace its \`database:\` section with

       database:
         name: psycopg2
         args: {user: synapse, password: <the one you chose>, dbname: synapse, host: synapse-db, cp_min: 5, cp_max: 10}

   and merge in \`${EXPORT_SETTINGS}\`.

7. Start Synapse:

       docker run -d --name synapse --network matrix -v synapse-data:/data -p 8008:8008 matrixdotorg/synapse

   Your users log in with their passwords as before and find their rooms and history; end-to-end
   encrypted history opens with their own keys (key backup or exported room keys), which never
   left their devices. Then point ${serverName}'s DNS (or its .well-known delegation) at the new
   host, behind a TLS proxy, as Synapse's documentation describes.
`;
}

/** The signing key and the local media (never Berth's secrets or its homeserver.yaml). */
async function* exportFiles(serverName: string, paths: HomeserverPaths): AsyncGenerator<ArchiveFile> {
  const key = signingKeyFileName(serverName);
  yield { name: `synapse/${key}`, path: join(paths.synapse, key) };
  yield* localMediaFiles(join(paths.synapse, MEDIA_STORE_DIR), `synapse/${MEDIA_STORE_DIR}`);
}

/**
 * Streams the export (pg_dump, README, settings, signing key, media → tar → zstd → age to the
 * passphrase) into `upload`. Runs against PostgreSQL alone: a stopped homeserver exports too.
 */
export function fullExport(
  core: HomeserverCore,
  serverId: string,
  job: FullExportJob,
  upload: (ciphertext: Readable) => Promise<UploadResult>,
  ctx: OperationContext,
): Promise<FullExportResult> {
  return core.serialised(serverId, async () => {
    const record = core.requireRecord(serverId);
    const { names, paths, step } = core.operation(serverId, ctx, { exportId: job.exportId });
    step(0.02, "deriving the key from the passphrase");
    const recipient = await agePassphraseRecipient(job.passphrase);
    step(0.05, "making sure PostgreSQL runs");
    let mediaFiles = 0;
    const uploaded = await core.withPostgres(names, ctx, async () => {
      step(0.1, "dumping the database, archiving it with the media and signing key, encrypting and uploading");
      const dump = await lockedDump(() => core.runtime.execStreaming(names.postgres, PG_DUMP, { env: ["PGPASSFILE=/run/secrets/pgpass"] }));
      const createdAt = new Date().toISOString();
      return upload(
        backupStream({
          manifest: {
            format: 1,
            serverId,
            serverName: record.serverName,
            createdAt,
            synapseImage: record.images.synapse,
            postgresImage: record.images.postgres,
            entries: ["database", "synapse", "config", EXPORT_README],
          },
          documents: [
            { name: EXPORT_README, content: Buffer.from(exportReadme(record.serverName, createdAt)) },
            { name: EXPORT_SETTINGS, content: Buffer.from(exportSettings(record.serverName)) },
          ],
          dump,
          files: exportFiles(record.serverName, paths),
          onArchived: (file) => {
            if (file.media) mediaFiles++;
          },
          recipient,
        }),
      );
    });
    step(1, `uploaded ${uploaded.parts.length} part${uploaded.parts.length === 1 ? "" : "s"}, ${uploaded.size} bytes with ${mediaFiles} media files`);
    return { serverId, exportId: job.exportId, mediaFiles, ...uploaded };
  });
}
