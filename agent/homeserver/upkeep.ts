// homeserver.upkeep: what keeps a homeserver's database and media store from
// growing without bound. The state compressor (synapse_auto_compressor, in the
// berth/upkeep tool image: images/build.sh) rewrites state_groups_state into
// deltas; cached copies of other servers' media not fetched within the
// retention are deleted through Synapse's admin API; then VACUUM and ANALYZE.
// Each step is safe while Synapse runs and safe to repeat. Sizes are measured
// before and after, for the usage data.
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { JobPayload, JobResult } from "../../protocol/jobs.ts";
import { MEDIA_STORE_DIR } from "./config.ts";
import { upkeepContainer } from "./containers.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import type { HomeserverNames, HomeserverPaths } from "./names.ts";
import { administer } from "./service-account.ts";

export const DEFAULT_UPKEEP_IMAGE = "berth/upkeep:latest";

/**
 * One run's share of the compressor: state groups per chunk, and chunks. The compressor keeps its
 * place in its own tables, so the next day's run carries on where this one stopped.
 */
export const COMPRESSOR_RUN = { chunkSize: 500, chunks: 100 };

/** VACUUM rewrites nothing in place, but reads every table: a big database takes a while. */
const VACUUM_TIMEOUT_MS = 2 * 60 * 60_000;

type Sizes = JobResult<"homeserver.upkeep">["before"];

/** Bytes of every file under `dir` (a missing directory holds none). */
async function directoryBytes(dir: string): Promise<number> {
  let entries: import("node:fs").Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true, recursive: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
  let total = 0;
  for (const entry of entries) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

async function measure(core: HomeserverCore, names: HomeserverNames, paths: HomeserverPaths): Promise<Sizes> {
  const result = await core.psql(names, "SELECT pg_database_size(current_database()) || '|' || (SELECT count(*) FROM state_groups_state);\n");
  const match = /^(\d+)\|(\d+)$/.exec(result.stdout.trim());
  if (result.exitCode !== 0 || !match) throw new Error(`measuring the database failed: ${result.stderr.trim().slice(0, 300)}`);
  return {
    databaseBytes: Number(match[1]),
    stateGroupsStateRows: Number(match[2]),
    mediaBytes: await directoryBytes(join(paths.synapse, MEDIA_STORE_DIR)),
  };
}

export async function upkeep(
  core: HomeserverCore,
  payload: JobPayload<"homeserver.upkeep">,
  image: string,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.upkeep">> {
  const { serverId } = payload;
  const { names, paths, step, log } = core.operation(serverId, ctx);
  const running = async () => {
    const record = core.requireRecord(serverId);
    if (record.suspended) throw new Error(`homeserver ${serverId} is suspended`);
    if (!(await core.runtime.inspectContainer(names.postgres))?.State.Running) throw new Error(`homeserver ${serverId} is not running: start it first`);
    return record;
  };

  step(0.05, "measuring the database and the media store");
  const before = await core.serialised(serverId, async () => {
    await running();
    return measure(core, names, paths);
  });

  step(0.1, "compressing the state tables");
  const compressorMs = await core.serialised(serverId, async () => {
    const record = await running();
    const spec = upkeepContainer(core.specInput(record, names, paths, "postgres", image), COMPRESSOR_RUN);
    await core.runtime.ensureImage(image, ctx.signal);
    const started = Date.now();
    const run = await core.runtime.runToCompletion(spec, ctx.signal);
    if (run.exitCode !== 0) throw new Error(`the state compressor failed (exit ${run.exitCode}): ${run.output.trim().slice(-500)}`);
    return Date.now() - started;
  });

  step(0.6, "deleting cached remote media past its retention");
  const beforeTs = Date.now() - payload.remoteMediaRetentionDays * 24 * 60 * 60_000;
  const remoteMediaDeleted = await administer(core, serverId, ctx, ({ admin }) => admin.purgeRemoteMediaCache(beforeTs));

  step(0.7, "VACUUM and ANALYZE");
  const after = await core.serialised(serverId, async () => {
    await running();
    const vacuum = await core.psql(names, "VACUUM (ANALYZE);\n", VACUUM_TIMEOUT_MS);
    if (vacuum.exitCode !== 0) throw new Error(`VACUUM failed: ${vacuum.stderr.trim().slice(0, 300)}`);
    step(0.95, "measuring again");
    return measure(core, names, paths);
  });
  log.info("upkeep done", { before, after, remoteMediaDeleted, compressorMs });
  return { serverId, before, after, remoteMediaDeleted, compressorMs };
}
