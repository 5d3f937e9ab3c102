// Backup throughput on a generated 2 GiB homeserver (media store, database dump,
// config): the agent's pipeline (agent/backup: tar → zstd -1 → age on node:zlib and
// node:crypto) against the same work done by standard tools, `tar | zstd -1 -T1 |
// age` (Debian packages), each writing its ciphertext to a local file. And, for the
// choice of age implementation, the agent's pipeline with age-encryption (pure JS)
// as its age step. Each Node pipeline runs in a child process of its own, whose
// peak RSS (VmHWM) is reported: the target is under 150 MiB whatever the size.
//
// Run alone: node_modules/.bin/node bench/backup.mjs
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { machineInfo, root, round, table } from "./lib.mjs";

const MiB = 1024 * 1024;
const SELF = fileURLToPath(import.meta.url);
const DUMP = "database/pg_dump";
const MANIFEST = {
  format: 1,
  serverId: "00000000-0000-4000-8000-000000000000",
  serverName: "bench.example.org",
  createdAt: new Date(0).toISOString(),
  synapseImage: "berth/synapse:latest",
  postgresImage: "berth/postgres:15",
  entries: [DUMP, "synapse/media_store/local_content", "synapse/media_store/local_thumbnails", "synapse/homeserver.yaml"],
};

/** A small seeded PRNG (mulberry32): the same tree on every run. */
function prng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Text zstd shrinks about 3×: JSON-ish lines of words and numbers. */
function textPool(random, size) {
  const words = ["matrix", "event", "room", "state", "member", "join", "m.room.message", "body", "sender", "content", "origin_server_ts", "true", "null"];
  const lines = [];
  for (let length = 0; length < size; ) {
    const line = `{"${words[Math.floor(random() * words.length)]}": "${words[Math.floor(random() * words.length)]}-${Math.floor(random() * 1e9)}", "ts": ${Math.floor(random() * 1e13)}}\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join("")).subarray(0, size);
}

/**
 * A homeserver's data: local media (80% random files of 50 KiB–8 MiB, sizes
 * log-uniform; 10% compressible text files of 10 KiB–1 MiB), thumbnails of
 * 5–60 KiB, a pg_dump of 5% (pg_dump -Fc output is zlib-compressed already:
 * random), the config and signing key. Returns the bytes written and files.
 */
function generateServer(dir, totalBytes) {
  const random = prng(42);
  const pool = textPool(random, 4 * MiB);
  const between = (low, high) => Math.floor(low * (high / low) ** random());
  const hex = () =>
    Math.floor(random() * 256)
      .toString(16)
      .padStart(2, "0");
  const id = () => Array.from({ length: 12 }, hex).join("");
  let written = 0;
  let files = 0;
  const write = (path, data) => {
    mkdirSync(join(dir, path, ".."), { recursive: true });
    writeFileSync(join(dir, path), data);
    written += data.length;
    files++;
  };
  const fillTo = (share, make) => {
    while (written < share * totalBytes) make();
  };
  write("homeserver.yaml", pool.subarray(0, 20_000));
  write("bench.example.org.signing.key", Buffer.from("ed25519 a_AbCd c2VjcmV0\n"));
  write(DUMP, randomBytes(Math.floor(0.05 * totalBytes)));
  files--; // the dump is a stream to the agent, not a file
  fillTo(0.15, () => {
    const size = between(10 * 1024, MiB);
    const offset = Math.floor(random() * (pool.length - size));
    write(`media_store/local_content/${hex()}/${hex()}/${id()}`, pool.subarray(offset, offset + size));
  });
  fillTo(0.18, () => write(`media_store/local_thumbnails/${hex()}/${hex()}/${id()}/320-240-image-jpeg-scale`, randomBytes(between(5 * 1024, 60 * 1024))));
  fillTo(1, () => write(`media_store/local_content/${hex()}/${hex()}/${id()}`, randomBytes(Math.min(between(50 * 1024, 8 * MiB), totalBytes - written))));
  return { bytes: written, files };
}

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }));

/** CPU seconds (user + system) of this process's finished, waited-for children: every process and thread of a pipeline. */
function childrenCpuSeconds() {
  const text = readFileSync("/proc/self/stat", "utf8");
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" "); // from field 3 on
  return (Number(fields[16 - 3]) + Number(fields[17 - 3])) / CLOCK_TICKS;
}

function statusMiB(field) {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(readFileSync("/proc/self/status", "utf8"))[1]) / 1024;
}

/**
 * agent/backup as one bundle, dependencies included, as the agent ships (esbuild):
 * the child's memory is then the pipeline's, without Node's TypeScript stripper.
 */
async function bundleAgentBackup(dir) {
  const outfile = join(dir, "agent-backup.mjs");
  await build({
    stdin: {
      contents: 'export { backupStream } from "./agent/backup/backup.ts"; export { archiveStream, localMediaFiles } from "./agent/backup/archive.ts";',
      resolveDir: root,
      loader: "ts",
    },
    bundle: true,
    platform: "node",
    target: "node22",
    format: "esm",
    outfile,
    logLevel: "silent",
  });
  return outfile;
}

/** In the child process: one backup of `dir` into `output`, its age step native or pure JS. */
async function runChild({ bundle, dir, output, recipient, age }) {
  const { archiveStream, backupStream, localMediaFiles } = await import(bundle);
  async function* files() {
    yield* localMediaFiles(join(dir, "media_store"), "synapse/media_store");
    for (const name of ["homeserver.yaml", "bench.example.org.signing.key"]) yield { name: `synapse/${name}`, path: join(dir, name) };
  }
  const contents = { manifest: MANIFEST, dump: createReadStream(join(dir, DUMP)), files: files() };
  const rssBeforeMiB = statusMiB("VmRSS");
  const start = performance.now();
  let ciphertext;
  if (age === "native") {
    ciphertext = backupStream({ ...contents, recipient });
  } else {
    const { Encrypter } = await import("age-encryption");
    const encrypter = new Encrypter();
    encrypter.addRecipient(recipient);
    ciphertext = Readable.fromWeb(await encrypter.encrypt(Readable.toWeb(archiveStream(contents))));
  }
  // A buffered writer, like the uploader that collects 8 MiB parts: not a write per 64 KiB chunk.
  await pipeline(ciphertext, createWriteStream(output, { highWaterMark: MiB }));
  process.stdout.write(JSON.stringify({ ms: performance.now() - start, rssBeforeMiB, peakRssMiB: statusMiB("VmHWM") }));
}

function runAgent(options) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SELF, "--child", JSON.stringify(options)], { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(stdout)) : reject(new Error(`backup child exited ${code}`))));
  });
}

function runShell(dir, output, recipient) {
  const start = performance.now();
  execFileSync("bash", ["-o", "pipefail", "-c", 'tar -C "$1" -cf - . | zstd -q -1 -T1 | age -r "$2" > "$3"', "bench", dir, recipient, output]);
  return { ms: performance.now() - start };
}

/**
 * Runs one pipeline; its throughput, CPU time and output size, then `check(output)`
 * and the output removed. `sync` after it, so its write-back does not land in the next run.
 */
async function measure(pipelineRun, output, inputBytes, check = () => {}) {
  const cpuBefore = childrenCpuSeconds();
  const run = await pipelineRun();
  const cpuSeconds = childrenCpuSeconds() - cpuBefore;
  execFileSync("sync");
  const outputBytes = statSync(output).size;
  check(output);
  rmSync(output);
  return { ...run, mibPerSec: inputBytes / MiB / (run.ms / 1000), cpuSecondsPerGiB: cpuSeconds / (inputBytes / 1024 / MiB), outputMiB: outputBytes / MiB };
}

export async function benchBackup({ totalMiB = 2048, rounds = 2 } = {}) {
  const { generateAgeKeyPair } = await import("../agent/backup/age.ts");
  const keys = generateAgeKeyPair();
  const work = mkdtempSync(join(tmpdir(), "berth-bench-backup-"));
  try {
    const dir = join(work, "server");
    const generateStart = performance.now();
    const { bytes, files } = generateServer(dir, totalMiB * MiB);
    execFileSync("sync");
    const generateSeconds = (performance.now() - generateStart) / 1000;
    const output = join(work, "backup.age");
    const bundle = await bundleAgentBackup(work);

    const keyFile = join(work, "key.txt");
    writeFileSync(keyFile, `${keys.identity}\n`, { mode: 0o600 });
    // The agent's backup opens with the standard tools and holds every file (and the manifest).
    const opensByHand = (file) => {
      const script = 'age -d -i "$1" "$2" | zstd -d | tar -tf - | grep -vc "^database/"';
      const listed = Number(execFileSync("bash", ["-o", "pipefail", "-c", script, "bench", keyFile, file]));
      if (listed !== files + 1) throw new Error(`the agent's backup lists ${listed} files besides the dump, not ${files + 1}`);
    };

    // Alternating rounds spread the machine's drift over both.
    const agent = [];
    const shell = [];
    for (let i = 0; i < rounds; i++) {
      const check = i === 0 ? opensByHand : undefined;
      agent.push(await measure(() => runAgent({ bundle, dir, output, recipient: keys.recipient, age: "native" }), output, bytes, check));
      shell.push(await measure(async () => runShell(dir, output, keys.recipient), output, bytes));
    }
    const pureJs = await measure(() => runAgent({ bundle, dir, output, recipient: keys.recipient, age: "age-encryption" }), output, bytes);

    const mean = (runs) => (runs.length * bytes) / MiB / (runs.reduce((sum, run) => sum + run.ms, 0) / 1000);
    const cpu = (runs) => runs.reduce((sum, run) => sum + run.cpuSecondsPerGiB, 0) / runs.length;
    return {
      inputMiB: bytes / MiB,
      files,
      generateSeconds,
      rounds,
      agent: { runs: agent, mibPerSec: mean(agent), cpuSecondsPerGiB: cpu(agent), peakRssMiB: Math.max(...agent.map((run) => run.peakRssMiB)) },
      shell: { runs: shell, mibPerSec: mean(shell), cpuSecondsPerGiB: cpu(shell) },
      pureJs,
      ratios: {
        agentOverShell: mean(agent) / mean(shell),
        agentOverShellByRound: agent.map((run, i) => run.mibPerSec / shell[i].mibPerSec),
        pureJsOverAgent: pureJs.mibPerSec / mean(agent),
        agentOverShellCpu: cpu(agent) / cpu(shell),
      },
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The results as printed by `npm run bench`. */
export function backupReport(result) {
  const spread = (runs) => runs.map((run) => round(run.mibPerSec, 0)).join(", ");
  const row = (name, summary, runs, peakRssMiB) => [
    name,
    round(summary.mibPerSec, 0),
    runs.length > 1 ? spread(runs) : "",
    round(summary.cpuSecondsPerGiB, 2),
    round(runs[0].outputMiB, 0),
    peakRssMiB === undefined ? "" : round(peakRssMiB, 1),
  ];
  return [
    `Backup of a generated homeserver: ${round(result.inputMiB, 0)} MiB in ${result.files} files plus a database dump (mostly random media of 50 KiB–8 MiB, ` +
      `10% compressible text; generated in ${round(result.generateSeconds, 0)} s), from the page cache to a local file; ${result.rounds} alternating rounds of agent and shell`,
    table(
      ["pipeline", "MiB/s", "per round", "CPU s/GiB", "output MiB", "peak RSS MiB (VmHWM)"],
      [
        row("agent: tar → zstd -1 → age (node:zlib, node:crypto)", result.agent, result.agent.runs, result.agent.peakRssMiB),
        row("shell: tar | zstd -1 -T1 | age (Debian)", result.shell, result.shell.runs),
        row("agent with age-encryption (pure JS) as its age step", result.pureJs, [result.pureJs], result.pureJs.peakRssMiB),
      ],
    ),
    "MiB/s: input MiB per second. The agent's pipeline runs in a child process (timed from its first read to its last write; " +
      `RSS ${round(result.agent.runs[0].rssBeforeMiB, 1)} MiB before it started); the shell's is timed around the whole command. ` +
      "CPU s/GiB: user + system time of all the pipeline's processes and threads (the agent's includes its Node start).",
    `Ratio agent ÷ shell: ${round(result.ratios.agentOverShell)} in throughput (per round ${result.ratios.agentOverShellByRound.map((r) => round(r)).join(", ")}), ` +
      `${round(result.ratios.agentOverShellCpu)} in CPU time; pure-JS age ÷ agent in throughput: ${round(result.ratios.pureJsOverAgent)}.`,
  ].join("\n");
}

if (process.argv[2] === "--child") {
  await runChild(JSON.parse(process.argv[3]));
} else if (import.meta.url === `file://${process.argv[1]}`) {
  const machine = machineInfo();
  console.log(`Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.platform}, Node ${machine.node}`);
  console.log(backupReport(await benchBackup()));
}
