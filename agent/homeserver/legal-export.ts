// homeserver.legal_export: what a homeserver's database holds about a legal
// request's scope, as JSON lines, encrypted to the operator's age recipient and
// uploaded like a backup. One read-only transaction (a consistent snapshot);
// psql fetches in batches, so nothing is held whole in memory or written to disk.
//
// The lines, in order: an "export" line (reference, scope, server), then "user",
// "room", "membership" and "event" records, then an "end" line with the counts
// (a file without it is truncated). With content, an event record carries the
// event as Synapse stores it (event_json): an encrypted room's m.room.encrypted
// event is the Megolm ciphertext its senders' clients made, which nobody on the
// server can read; nothing else (no keys, no media, no account data) is read.
import { pipeline, Readable } from "node:stream";
import type { JobPayload, JobResult, LegalExportScope } from "../../protocol/jobs.ts";
import { AgeEncryptStream } from "../backup/age.ts";
import type { UploadResult } from "../backup/transfer.ts";
import type { StreamingExec } from "../runtime/docker.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import { POSTGRES_DB, POSTGRES_USER } from "./secrets.ts";

type LegalExportJob = Pick<JobPayload<"homeserver.legal_export">, "exportId" | "reference" | "scope" | "recipient">;
type LegalExportResult = JobResult<"homeserver.legal_export">;
type RecordCounts = LegalExportResult["records"];

/** The export's format: a reader checks it on the first line. */
export const LEGAL_EXPORT_FORMAT = 1;

const PSQL = ["psql", "-h", "/run/postgresql", "-U", POSTGRES_USER, "-d", POSTGRES_DB, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"];

/** Only validated Matrix ids reach here (the catalogue's schema); quoting keeps SQL from them anyway. */
const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;
const sqlArray = (values: string[]) => `ARRAY[${values.map(sqlString).join(", ")}]::text[]`;

/** A condition on `column` (origin_server_ts, Unix ms) for the scope's time range. */
function inTimeRange(scope: LegalExportScope, column: string): string {
  return [scope.from === undefined ? "" : ` AND ${column} >= ${scope.from}`, scope.until === undefined ? "" : ` AND ${column} < ${scope.until}`].join("");
}

/** The SQL that prints the export's records, one JSON object a line. */
export function legalExportSql(scope: LegalExportScope): string {
  const users = scope.users.length > 0 ? sqlArray(scope.users) : null;
  const rooms = scope.rooms.length > 0 ? sqlArray(scope.rooms) : null;
  // The rooms in scope: those asked for, and of those the rooms the users were ever members of.
  const scopedRooms = [
    "SELECT r.room_id FROM rooms r WHERE true",
    rooms ? ` AND r.room_id = ANY(${rooms})` : "",
    users ? ` AND EXISTS (SELECT 1 FROM room_memberships m WHERE m.room_id = r.room_id AND m.user_id = ANY(${users}))` : "",
  ].join("");
  const scopedUsers = users
    ? `u.name = ANY(${users})`
    : rooms
      ? `u.name IN (SELECT m.user_id FROM room_memberships m WHERE m.room_id IN (${scopedRooms}))`
      : "true";
  const content = scope.content ? ", 'stored', ej.json::json" : "";
  return [
    "\\set FETCH_COUNT 1000",
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;",
    "SELECT json_build_object('record', 'user', 'userId', u.name, 'createdAt', u.creation_ts * 1000, 'admin', COALESCE(u.admin, 0) = 1,",
    "  'deactivated', u.deactivated = 1)::text",
    `FROM users u WHERE ${scopedUsers} ORDER BY u.name;`,
    "SELECT json_build_object('record', 'room', 'roomId', r.room_id, 'roomVersion', r.room_version, 'creator', r.creator, 'public', r.is_public,",
    "  'encryption', (SELECT s.encryption FROM room_stats_state s WHERE s.room_id = r.room_id),",
    "  'createdAt', (SELECT e.origin_server_ts FROM current_state_events c JOIN events e USING (event_id)",
    "                WHERE c.room_id = r.room_id AND c.type = 'm.room.create' AND c.state_key = ''))::text",
    `FROM rooms r WHERE r.room_id IN (${scopedRooms}) ORDER BY r.room_id;`,
    "SELECT json_build_object('record', 'membership', 'roomId', m.room_id, 'userId', m.user_id, 'membership', m.membership,",
    "  'sender', m.sender, 'eventId', m.event_id, 'originServerTs', e.origin_server_ts)::text",
    "FROM room_memberships m JOIN events e USING (event_id)",
    `WHERE m.room_id IN (${scopedRooms})${users ? ` AND m.user_id = ANY(${users})` : ""}${inTimeRange(scope, "e.origin_server_ts")}`,
    "ORDER BY m.room_id, e.stream_ordering;",
    "SELECT json_build_object('record', 'event', 'eventId', e.event_id, 'roomId', e.room_id, 'type', e.type, 'stateKey', e.state_key,",
    `  'sender', e.sender, 'originServerTs', e.origin_server_ts, 'receivedTs', e.received_ts, 'outlier', e.outlier${content})::text`,
    "FROM events e JOIN event_json ej USING (event_id)",
    `WHERE e.room_id IN (${scopedRooms})${users ? ` AND e.sender = ANY(${users})` : ""}${inTimeRange(scope, "e.origin_server_ts")}`,
    "ORDER BY e.room_id, e.stream_ordering;",
    "COMMIT;",
    "",
  ].join("\n");
}

const RECORD_PREFIX = /^\{"record" : "(user|room|membership|event)"/;

/**
 * psql's lines passed on as they come, counted by record, between the export's first line and its
 * "end" line. psql failing part-way fails the stream (and so the upload) rather than ending it.
 */
async function* exportLines(header: object, exec: StreamingExec, counts: RecordCounts): AsyncGenerator<Buffer> {
  yield Buffer.from(`${JSON.stringify(header)}\n`);
  let lineStart = "";
  for await (const chunk of exec.stdout as AsyncIterable<Buffer>) {
    let from = 0;
    for (let newline = chunk.indexOf(10); newline >= 0; newline = chunk.indexOf(10, from)) {
      const record = RECORD_PREFIX.exec(lineStart + chunk.subarray(from, Math.min(newline, from + 40)).toString("utf8"))?.[1];
      if (record) counts[`${record}s` as keyof RecordCounts] += 1;
      lineStart = "";
      from = newline + 1;
    }
    if (lineStart.length < 40) lineStart += chunk.subarray(from, from + 40).toString("utf8");
    yield chunk;
  }
  const { exitCode, stderr } = await exec.finished;
  if (exitCode !== 0) throw new Error(`psql exited with ${exitCode}: ${stderr.trim().slice(-500)}`);
  yield Buffer.from(`${JSON.stringify({ record: "end", records: counts })}\n`);
}

/** Errors reach the caller through the upload, which reads the stream pipeline returns. */
const reportedByStream = () => {};

/**
 * Streams the export (psql → JSON lines → age to the operator's recipient) into `upload`. Runs
 * against PostgreSQL alone: a stopped or suspended homeserver can be exported too.
 */
export function legalExport(
  core: HomeserverCore,
  serverId: string,
  job: LegalExportJob,
  upload: (ciphertext: Readable) => Promise<UploadResult>,
  ctx: OperationContext,
): Promise<LegalExportResult> {
  return core.serialised(serverId, async () => {
    const record = core.requireRecord(serverId);
    const { names, step } = core.operation(serverId, ctx, { exportId: job.exportId });
    step(0.05, "making sure PostgreSQL runs");
    const records: RecordCounts = { users: 0, rooms: 0, memberships: 0, events: 0 };
    const uploaded = await core.withPostgres(names, ctx, async () => {
      step(0.1, "querying, encrypting and uploading");
      const exec = await core.runtime.execStreaming(names.postgres, PSQL, {
        stdin: Readable.from([legalExportSql(job.scope)]),
        env: ["PGPASSFILE=/run/secrets/pgpass"],
      });
      const header = {
        record: "export",
        format: LEGAL_EXPORT_FORMAT,
        exportId: job.exportId,
        reference: job.reference,
        serverName: record.serverName,
        scope: job.scope,
        createdAt: new Date().toISOString(),
      };
      return upload(pipeline(Readable.from(exportLines(header, exec, records)), new AgeEncryptStream(job.recipient), reportedByStream));
    });
    step(1, `uploaded ${uploaded.parts.length} part${uploaded.parts.length === 1 ? "" : "s"}, ${uploaded.size} bytes`);
    return { serverId, exportId: job.exportId, records, ...uploaded };
  });
}
