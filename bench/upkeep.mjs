// Upkeep's effect on a generated history (agent/homeserver/upkeep.ts): a real
// Synapse and PostgreSQL provisioned by the agent's handlers, a room with a long
// state history written through the client API (the upkeep test's generator,
// test/agent/homeserver/state-history.ts, on a bigger history), then one
// homeserver.upkeep job: the database's size and state_groups_state's rows before
// and after, the compressor's run time and the whole job's. Then what VACUUM FULL
// would give back on state_groups_state alone (the table's bytes before and after)
// and how long it holds its exclusive lock (its run time): the numbers behind
// docs/decisions.md's choice.
//
// Needs Docker Engine and the images (images/build.sh, run here first); run as root.
// Run alone: node_modules/.bin/node bench/upkeep.mjs
import { performance } from "node:perf_hooks";
import { TestRun, ensureImages } from "../test/agent/homeserver/helpers.ts";
import { makeStateHistory } from "../test/agent/homeserver/state-history.ts";
import { machineInfo, round, table } from "./lib.mjs";

/** Three times the test's history: 900 state keys, a topic change after every third (1,200 state events). */
const HISTORY = { stateKeys: 900, topicEvery: 3 };
const MiB = 2 ** 20;

export async function benchUpkeep() {
  await ensureImages();
  const run = new TestRun();
  try {
    const spec = run.spec("bench");
    await run.run("homeserver.provision", spec);
    const sql = async (query) => run.sql(spec.serverId, query);
    const tableBytes = async () => Number(await sql("SELECT pg_total_relation_size('state_groups_state');"));

    const historyStarted = performance.now();
    await makeStateHistory(run, spec.serverId, spec.serverName, HISTORY);
    const historyMs = performance.now() - historyStarted;

    const tableBefore = await tableBytes();
    const jobStarted = performance.now();
    const result = await run.run("homeserver.upkeep", { serverId: spec.serverId, remoteMediaRetentionDays: 30 });
    const jobMs = performance.now() - jobStarted;

    const tableAfterUpkeep = await tableBytes();
    const fullStarted = performance.now();
    await sql("VACUUM FULL state_groups_state;");
    const vacuumFullMs = performance.now() - fullStarted;
    const tableAfterFull = await tableBytes();
    const databaseAfterFull = Number(await sql("SELECT pg_database_size(current_database());"));

    return {
      history: { ...HISTORY, stateEvents: HISTORY.stateKeys + Math.ceil(HISTORY.stateKeys / HISTORY.topicEvery), ms: historyMs },
      before: result.before,
      after: result.after,
      compressorMs: result.compressorMs,
      jobMs,
      stateGroupsStateBytes: { before: tableBefore, afterUpkeep: tableAfterUpkeep, afterVacuumFull: tableAfterFull },
      vacuumFull: {
        lockMs: vacuumFullMs,
        reclaimedBytes: tableAfterUpkeep - tableAfterFull,
        deadShare: (tableAfterUpkeep - tableAfterFull) / tableAfterUpkeep,
        databaseBytesAfter: databaseAfterFull,
      },
      ratios: {
        rowsAfterOverBefore: result.after.stateGroupsStateRows / result.before.stateGroupsStateRows,
        databaseAfterOverBefore: result.after.databaseBytes / result.before.databaseBytes,
        databaseAfterVacuumFullOverBefore: databaseAfterFull / result.before.databaseBytes,
      },
    };
  } finally {
    await run.cleanup();
  }
}

export function upkeepReport(result) {
  const mib = (bytes) => round(bytes / MiB, 2);
  return [
    `Upkeep on a generated history (the agent's handlers, real Synapse and PostgreSQL): one room, ${result.history.stateKeys} state keys and a topic ` +
      `change after every ${result.history.topicEvery} (${result.history.stateEvents} state events through the client API, written in ${round(result.history.ms / 1000, 1)} s), then one homeserver.upkeep job`,
    table(
      ["measure", "before", "after", "after ÷ before"],
      [
        ["database, MiB (pg_database_size)", mib(result.before.databaseBytes), mib(result.after.databaseBytes), round(result.ratios.databaseAfterOverBefore)],
        ["state_groups_state rows", result.before.stateGroupsStateRows, result.after.stateGroupsStateRows, round(result.ratios.rowsAfterOverBefore)],
        [
          "state_groups_state, MiB (with indexes)",
          mib(result.stateGroupsStateBytes.before),
          mib(result.stateGroupsStateBytes.afterUpkeep),
          round(result.stateGroupsStateBytes.afterUpkeep / result.stateGroupsStateBytes.before),
        ],
      ],
    ),
    `Compressor ${round(result.compressorMs / 1000, 2)} s; the whole job (measure, compress, media, VACUUM ANALYZE, measure) ${round(result.jobMs / 1000, 2)} s.`,
    `VACUUM FULL state_groups_state afterwards: ${mib(result.stateGroupsStateBytes.afterUpkeep)} → ${mib(result.stateGroupsStateBytes.afterVacuumFull)} MiB ` +
      `(${round(result.vacuumFull.deadShare * 100, 1)} % of the table given back), holding its exclusive lock ${round(result.vacuumFull.lockMs)} ms ` +
      `(psql in the container, so a few ms of exec included); database ${mib(result.vacuumFull.databaseBytesAfter)} MiB, ` +
      `${round(result.ratios.databaseAfterVacuumFullOverBefore)} of before.`,
  ].join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const machine = machineInfo();
  console.log(`Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.platform}, Node ${machine.node}`);
  const result = await benchUpkeep();
  console.log(upkeepReport(result));
  console.log(JSON.stringify(result));
}
