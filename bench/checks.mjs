// What the promise checks cost a host (agent/checks, agent/homeserver/restore-verify.ts): a real
// Synapse and PostgreSQL provisioned by the agent's handlers, then one daily homeserver.checks run
// of the host's checks (encryption by default with its throwaway probe user, disk encryption,
// isolation with its probe container; certificates need the proxy, which this run has none of) and
// restore verifications of backups of two sizes. Each is measured against a backup of the same
// server taken in the same run: wall time, the agent's CPU seconds (this process runs its
// handlers), the whole host's CPU seconds (/proc/stat: the containers, the sandbox's and the probe's
// included, which are gone by the end) and the agent's peak memory.
//
// Needs Docker Engine and the images (images/build.sh, run here first); run as root.
// Run alone: node_modules/.bin/node bench/checks.mjs
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { generateAgeKeyPair } from "../agent/backup/age.ts";
import { BACKUP_MIN_PART_SIZE } from "../protocol/messages.ts";
import { BackupTarget } from "../test/agent/homeserver/backup-target.ts";
import { TestRun, ensureImages } from "../test/agent/homeserver/helpers.ts";
import { machineInfo, round, table } from "./lib.mjs";

const MiB = 2 ** 20;
/** The media the larger backup adds: what the verification's cost grows with, beside the database. */
const EXTRA_MEDIA_MIB = 64;
const UPLOAD_MIB = 32;
const HOST_CHECKS = ["encryption-by-default", "disk-encryption", "isolation"];

/** CPU seconds the whole host has spent busy so far (/proc/stat's first line, in USER_HZ ticks of 1/100 s). */
function hostCpuS() {
  const [, ...ticks] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = ticks;
  return (user + nice + system + irq + softirq + steal) / 100;
}

/** Runs `job` and measures it: wall ms, the agent's CPU s, the host's CPU s. */
async function measured(job) {
  const cpuBefore = process.cpuUsage();
  const hostBefore = hostCpuS();
  const started = performance.now();
  const result = await job();
  const wallMs = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  return { result, wallMs, agentCpuS: (cpu.user + cpu.system) / 1e6, hostCpuS: hostCpuS() - hostBefore };
}

export async function benchChecks() {
  await ensureImages();
  const run = new TestRun({ hostChecks: { privatePorts: [{ what: "the proxy's admin API", port: 2019 }] } });
  const target = new BackupTarget(run.agentIdentity.hostId, run.agentIdentity.privateKey);
  const keys = generateAgeKeyPair();
  await target.start();
  try {
    const spec = run.spec("bench-checks");
    await run.run("homeserver.provision", spec);
    const password = await run.registerUser(spec.serverId, spec.serverName, "alice");
    const token = (await run.login(spec.serverId, "alice", password)).token;

    const backup = (id) =>
      measured(() =>
        run.run("homeserver.backup", {
          serverId: spec.serverId,
          backupId: id,
          recipient: keys.recipient,
          partSize: BACKUP_MIN_PART_SIZE,
          uploadBase: target.uploadBase(id),
        }),
      );
    const verify = (id) =>
      measured(() =>
        run.run("homeserver.restore_verify", { serverId: spec.serverId, backupId: id, identity: keys.identity, downloadUrl: target.objectUrl(id) }),
      );

    const checks = await measured(() => run.run("homeserver.checks", { serverId: spec.serverId, checks: HOST_CHECKS }));
    const outcomes = checks.result.outcomes.map((outcome) => `${outcome.checkId}: ${outcome.result}`);

    const small = { id: `${run.prefix}-small` };
    small.backup = await backup(small.id);
    small.verify = await verify(small.id);

    // In uploads under the default 50 MiB limit.
    for (let uploaded = 0; uploaded < EXTRA_MEDIA_MIB; uploaded += UPLOAD_MIB) {
      const upload = await fetch(`${await run.synapseBase(spec.serverId)}/_matrix/media/v3/upload?filename=bench-${uploaded}.bin`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream" },
        body: randomBytes(UPLOAD_MIB * MiB),
      });
      if (upload.status !== 200) throw new Error(`the media upload answered ${upload.status}`);
    }
    const large = { id: `${run.prefix}-large` };
    large.backup = await backup(large.id);
    large.verify = await verify(large.id);

    const sized = (entry) => ({
      backupBytes: entry.backup.result.size,
      counts: entry.verify.result.counts,
      backup: { wallMs: entry.backup.wallMs, agentCpuS: entry.backup.agentCpuS, hostCpuS: entry.backup.hostCpuS },
      verify: {
        wallMs: entry.verify.wallMs,
        agentCpuS: entry.verify.agentCpuS,
        hostCpuS: entry.verify.hostCpuS,
        timings: entry.verify.result.timings,
      },
      verifyOverBackup: entry.verify.wallMs / entry.backup.wallMs,
    });
    return {
      checks: { ids: HOST_CHECKS, outcomes, wallMs: checks.wallMs, agentCpuS: checks.agentCpuS, hostCpuS: checks.hostCpuS },
      agentPeakRssMiB: process.resourceUsage().maxRSS / 1024,
      small: sized(small),
      large: sized(large),
      ratios: {
        checksOverSmallBackup: checks.wallMs / small.backup.wallMs,
        verifyOverBackupSmall: small.verify.wallMs / small.backup.wallMs,
        verifyOverBackupLarge: large.verify.wallMs / large.backup.wallMs,
        largeVerifyOverSmallVerify: large.verify.wallMs / small.verify.wallMs,
      },
    };
  } finally {
    await target.stop();
    await run.cleanup();
  }
}

export function checksReport(result) {
  const s = (ms) => round(ms / 1000, 2);
  const row = (what, m, baseline) => [what, s(m.wallMs), round(m.agentCpuS, 2), round(m.hostCpuS, 2), baseline === undefined ? "" : round(m.wallMs / baseline)];
  const mib = (bytes) => round(bytes / MiB, 1);
  return [
    `Promise checks on one homeserver (the agent's handlers, real Synapse and PostgreSQL; no proxy, so no certificates check): ` +
      `${result.checks.outcomes.join(", ")}`,
    table(
      ["job", "wall s", "agent CPU s", "host CPU s", "wall ÷ small backup"],
      [
        row(`backup, ${mib(result.small.backupBytes)} MiB (baseline)`, result.small.backup, result.small.backup.wallMs),
        row(`daily host checks (${result.checks.ids.length})`, result.checks, result.small.backup.wallMs),
        row(`restore verification of the ${mib(result.small.backupBytes)} MiB backup`, result.small.verify, result.small.backup.wallMs),
        row(`backup, ${mib(result.large.backupBytes)} MiB`, result.large.backup, result.small.backup.wallMs),
        row(`restore verification of the ${mib(result.large.backupBytes)} MiB backup`, result.large.verify, result.small.backup.wallMs),
      ],
    ),
    `Restore verification ÷ its backup: ${round(result.ratios.verifyOverBackupSmall)} (small), ${round(result.ratios.verifyOverBackupLarge)} (large); ` +
      `the large one's ÷ the small one's: ${round(result.ratios.largeVerifyOverSmallVerify)}. ` +
      `Large verification: unpack ${s(result.large.verify.timings.downloadAndUnpackMs)} s, database ${s(result.large.verify.timings.databaseRestoreMs)} s, ` +
      `Synapse ${s(result.large.verify.timings.synapseStartMs)} s. The agent's peak RSS over the run: ${round(result.agentPeakRssMiB, 0)} MiB.`,
  ].join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const machine = machineInfo();
  console.log(`Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.platform}, Node ${machine.node}`);
  const result = await benchChecks();
  console.log(checksReport(result));
  console.log(JSON.stringify(result));
}
