// homeserver.restore_verify: the newest backup of a server restored into a throwaway sandbox
// beside it, Synapse started on it, and what it holds counted the way the backup's manifest was
// counted; then the sandbox is gone. The live homeserver is never touched or stopped.
//
// The sandbox is a homeserver of its own: names derived from the server's id (within the
// firewall's bridge wildcards, never a live server's), one internal network for both containers
// with the firewall's rules on it (nothing in or out but the host's public HTTPS ports), the same
// hardened container specs, a PostgreSQL initialised with the backup's own secrets, and a
// homeserver.yaml the agent renders for it. Its containers carry no workload labels, so neither
// the inventory nor the usage reports take them for a homeserver. Its files sit outside the
// server's storage quota (a full homeserver can still be verified), under the agent's data root.
import { createReadStream, mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type Docker from "dockerode";
import type { BackupCounts, JobResult } from "../../protocol/jobs.ts";
import { DUMP_FILE } from "../backup/archive.ts";
import { restoreStream } from "../backup/backup.ts";
import { errorMessage } from "../log.ts";
import { MEDIA_STORE_DIR } from "./config.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import { postgresContainer, synapseContainer } from "./containers.ts";
import { restoreSandboxNames, restoreSandboxPaths, type HomeserverNames, type HomeserverPaths } from "./names.ts";
import { prepareRestoredTree } from "./restore-files.ts";
import { ensureDataDirs, ensureSecrets, POSTGRES_DB, POSTGRES_USER } from "./secrets.ts";
import { countRows, countsText, PG_RESTORE } from "./snapshot.ts";

/** On the sandbox's containers and network: the server it verifies (and no workload label). */
export const RESTORE_SANDBOX_LABEL = "berth.restore-verify";

export async function verifyRestore(
  core: HomeserverCore,
  serverId: string,
  job: { backupId: string; identity: string },
  download: () => Promise<Readable>,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.restore_verify">> {
  const record = core.requireRecord(serverId);
  const { log, step } = core.operation(serverId, ctx, { backupId: job.backupId });
  const names = restoreSandboxNames(serverId, core.options.hostNamespace);
  const paths = restoreSandboxPaths(ctx.dataRoot, serverId);
  const started = Date.now();
  // One sandbox per server at a time: a second verification waits for the first to be cleared away.
  return core.serialised(`${RESTORE_SANDBOX_LABEL}:${serverId}`, async () => {
    await removeSandbox(core, names, paths);
    try {
      step(0.05, "downloading, decrypting and unpacking the backup");
      mkdirSync(join(ctx.dataRoot, "restore-verify"), { recursive: true, mode: 0o700 });
      const extracted = await restoreStream(await download(), job.identity, paths.root);
      if (extracted.manifest.serverName !== record.serverName || extracted.manifest.serverId !== serverId) {
        throw new Error(`the backup is of ${extracted.manifest.serverName}, not ${record.serverName}: refusing to verify it as this server's`);
      }
      prepareRestoredTree(paths.root, record.uid);
      ensureDataDirs(paths, record.uid);
      const secrets = ensureSecrets(paths, record.uid);
      const mediaFiles = filesUnder(join(paths.synapse, MEDIA_STORE_DIR));
      const unpacked = Date.now();

      step(0.3, "the sandbox's network and PostgreSQL");
      const labels = { ...core.labels, [RESTORE_SANDBOX_LABEL]: serverId };
      await core.runtime.ensureNetwork(names.dbNetwork, { internal: true, bridgeName: names.dbBridge, labels });
      const network = await core.runtime.inspectNetwork(names.dbNetwork);
      if (!network) throw new Error(`the sandbox's network ${names.dbNetwork} vanished while being set up`);
      await core.firewallBridges(names, network.bridge, network.bridge);
      await core.runtime.createContainer(sandboxed(postgresContainer(core.specInput(record, names, paths, "postgres", record.images.postgres)), labels));
      await core.runtime.startContainer(names.postgres);
      await core.waitPostgres(names, ctx.signal);

      step(0.45, "restoring the database");
      await maintenance(core, names, `DROP DATABASE IF EXISTS ${POSTGRES_DB};`);
      await maintenance(core, names, `CREATE DATABASE ${POSTGRES_DB} OWNER ${POSTGRES_USER} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C';`);
      const restoring = await core.runtime.execStreaming(names.postgres, [...PG_RESTORE, `--dbname=${POSTGRES_DB}`], {
        stdin: createReadStream(join(paths.root, DUMP_FILE)),
        env: ["PGPASSFILE=/run/secrets/pgpass"],
      });
      for await (const _ of restoring.stdout as AsyncIterable<Buffer>);
      const restored = await restoring.finished;
      if (restored.exitCode !== 0) throw new Error(`pg_restore exited with ${restored.exitCode}: ${restored.stderr.trim().slice(-500)}`);
      const databaseRestored = Date.now();

      step(0.65, "starting Synapse on the restored data");
      await core.writeSynapseConfig(record, names, paths, secrets, ctx.signal);
      await core.runtime.createContainer(sandboxed(synapseContainer(core.specInput(record, names, paths, "synapse", record.images.synapse)), labels));
      await core.runtime.startContainer(names.synapse);
      await core.waitSynapse(names, core.timeouts.synapseHealthyMs, ctx.signal);
      const synapseUp = Date.now();

      step(0.85, "counting users, rooms, events and media files");
      const counts: BackupCounts = { ...(await countRows(core, names)), mediaFiles };
      step(1, `restored and started in a sandbox: ${countsText(counts)}`);
      return {
        serverId,
        backupId: job.backupId,
        counts,
        synapseStarted: true,
        timings: {
          downloadAndUnpackMs: unpacked - started,
          databaseRestoreMs: databaseRestored - unpacked,
          synapseStartMs: synapseUp - databaseRestored,
          totalMs: Date.now() - started,
        },
      };
    } finally {
      await removeSandbox(core, names, paths).catch((error: unknown) =>
        log.warn("the restore sandbox could not be removed; the next verification of this server removes it", { error: errorMessage(error) }),
      );
    }
  });
}

/** The hardened spec, on the sandbox's labels only: no workload, kind or role label of a homeserver. */
function sandboxed(options: Docker.ContainerCreateOptions, labels: Record<string, string>): Docker.ContainerCreateOptions {
  return { ...options, Labels: labels, HostConfig: { ...options.HostConfig, RestartPolicy: { Name: "no", MaximumRetryCount: 0 } } };
}

/** Containers first (nothing of the sandbox runs), then its firewall rules, network and files. */
async function removeSandbox(core: HomeserverCore, names: HomeserverNames, paths: HomeserverPaths): Promise<void> {
  await core.runtime.removeContainer(names.synapse, { force: true });
  await core.runtime.removeContainer(names.postgres, { force: true });
  await core.options.firewall?.remove({ chainId: names.chainId, tag: names.firewallTag });
  await core.runtime.removeNetwork(names.dbNetwork);
  rmSync(paths.root, { recursive: true, force: true });
}

async function maintenance(core: HomeserverCore, names: HomeserverNames, sql: string): Promise<void> {
  const result = await core.psql(names, sql, 120_000, "postgres");
  if (result.exitCode !== 0) throw new Error(`${sql.split(" ").slice(0, 3).join(" ")} failed: ${result.stderr.trim().slice(0, 300)}`);
}

/** Regular files under `dir`, as the backup counted the media it archived. */
function filesUnder(dir: string): number {
  return readdirSync(dir, { withFileTypes: true, recursive: true }).filter((entry) => entry.isFile()).length;
}
