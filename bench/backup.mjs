// Backup throughput on a generated 2 GiB homeserver (media store, database dump,
// config), upload included: the agent's pipeline (agent/backup: tar → zstd -1 → age
// on node:zlib and node:crypto, then uploadBackup) against the same work done by
// standard tools, `tar | zstd -1 -T1 | age` (Debian packages) piped into the
// agent's own uploader (uploadBackup reading its stdin, in a Node process of its
// own). Both upload the same way, through the agent's real upload path (8 MiB
// parts, each hashed once, a signed token per request, the whole hashed for the
// completion) into the same local sink: an HTTP server in this (the parent)
// process that writes each part at its offset in a local file and answers with the
// part's size and the hash its token claims (the first round checks each side's file
// against its completion's hash, and opens the agent's with age, zstd and tar). The sink's
// CPU is the parent's and counted for neither side. And, for the choice of age
// implementation, the agent's pipeline with age-encryption (pure JS) as its age
// step. Each side is timed in this process from spawning its processes to their
// exit (so each includes one Node start); CPU is the user + system time of all its
// processes and threads. Both sides' Node processes run with the flags the agent's
// package starts the agent with. The Node pipeline's peak RSS (VmHWM) is reported: the
// target is under 150 MiB whatever the size. Rounds alternate agent and shell;
// figures are medians over the rounds, ratios the median of the per-round ratios.
//
// Run alone: npm run bench -- backup (or node_modules/.bin/node bench/backup.mjs)
import { execFileSync, spawn } from "node:child_process";
import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { createServer } from "node:http";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { agentNodeFlags, machineInfo, root, round, table } from "./lib.mjs";

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
      contents:
        'export { backupStream } from "./agent/backup/backup.ts"; export { archiveStream, localMediaFiles } from "./agent/backup/archive.ts"; export { uploadBackup } from "./agent/backup/transfer.ts";',
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

const PART_SIZE = 8 * MiB;

/**
 * The local sink both sides upload to: the Worker's agent endpoints reduced to
 * writing each part at its offset in `output`. It answers a part with its size and
 * the hash its token claims (the uploader checks the answer; the first round checks
 * the file), so its own cost stays small and is the same for both sides.
 */
async function startSink(output) {
  const file = await open(output, "w");
  const state = { completed: undefined };
  const server = createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const part = /\/parts\/(\d+)$/.exec(request.url);
    if (part) {
      const claims = JSON.parse(Buffer.from(request.headers.authorization.split(".")[1], "base64url").toString());
      await file.write(body, 0, body.length, (Number(part[1]) - 1) * PART_SIZE);
      response.setHeader("content-type", "application/json");
      response.end(JSON.stringify({ partNumber: Number(part[1]), size: body.length, sha256: claims.body_sha256 }));
      return;
    }
    if (request.url.endsWith("/complete")) state.completed = JSON.parse(body.toString());
    response.end("{}");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    uploadBase: `http://127.0.0.1:${server.address().port}/api/agent/backups/bench`,
    /** The completion request of the last upload, then the sink is ready for the next one. */
    async finish() {
      const { completed } = state;
      state.completed = undefined;
      await file.truncate(completed?.size ?? 0);
      return completed;
    },
    async close() {
      server.close();
      await file.close();
    },
  };
}

/** In a child process: one backup of `dir` uploaded to `uploadBase` (age native or pure JS), or stdin uploaded as it is. */
async function runChild({ bundle, dir, uploadBase, recipient, mode }) {
  const { archiveStream, backupStream, localMediaFiles, uploadBackup } = await import(bundle);
  const identity = { hostId: "bench-host", privateKey: generateKeyPairSync("ed25519").privateKey };
  const upload = (ciphertext) => uploadBackup(ciphertext, { identity, uploadBase, partSize: PART_SIZE, signal: new AbortController().signal });
  if (mode === "stdin") {
    await upload(process.stdin);
    return;
  }
  async function* files() {
    yield* localMediaFiles(join(dir, "media_store"), "synapse/media_store");
    for (const name of ["homeserver.yaml", "bench.example.org.signing.key"]) yield { name: `synapse/${name}`, path: join(dir, name) };
  }
  const contents = { manifest: MANIFEST, dump: createReadStream(join(dir, DUMP)), files: files() };
  const rssBeforeMiB = statusMiB("VmRSS");
  let ciphertext;
  if (mode === "native") {
    ciphertext = backupStream({ ...contents, recipient });
  } else {
    const { Encrypter } = await import("age-encryption");
    const encrypter = new Encrypter();
    encrypter.addRecipient(recipient);
    ciphertext = Readable.fromWeb(await encrypter.encrypt(Readable.toWeb(archiveStream(contents))));
  }
  await upload(ciphertext);
  process.stdout.write(JSON.stringify({ rssBeforeMiB, peakRssMiB: statusMiB("VmHWM") }));
}

/** Runs a command to its exit: its stdout, and the wall time from spawning it. */
function timed(command, args) {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve({ ms: performance.now() - start, stdout }) : reject(new Error(`${command} exited ${code}`))));
  });
}

const AGENT_NODE_FLAGS = agentNodeFlags();

/** BENCH_CPU_PROF=<dir>: the agent's side writes a CPU profile per thread there (node --cpu-prof), to see where its time goes. */
const CPU_PROFILE_ARGS = process.env.BENCH_CPU_PROF ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_CPU_PROF] : [];

async function runAgent(options) {
  const { ms, stdout } = await timed(process.execPath, [...AGENT_NODE_FLAGS, ...CPU_PROFILE_ARGS, SELF, "--child", JSON.stringify(options)]);
  return { ms, ...JSON.parse(stdout) };
}

function runShell(dir, recipient, options) {
  const script = 'tar -C "$1" -cf - . | zstd -q -1 -T1 | age -r "$2" | "$3" $4 "$5" --child "$6"';
  const uploader = [process.execPath, AGENT_NODE_FLAGS.join(" "), SELF, JSON.stringify({ ...options, mode: "stdin" })];
  return timed("bash", ["-o", "pipefail", "-c", script, "bench", dir, recipient, ...uploader]);
}

/**
 * Runs one pipeline; its throughput, CPU time and upload's size, then `check(output, completed)`.
 * `sync` after it, so its write-back does not land in the next run.
 */
async function measure(pipelineRun, sink, output, inputBytes, check = () => {}) {
  const cpuBefore = childrenCpuSeconds();
  const run = await pipelineRun();
  const cpuSeconds = childrenCpuSeconds() - cpuBefore;
  const completed = await sink.finish();
  execFileSync("sync");
  if (!completed) throw new Error("the upload was not completed");
  check(output, completed);
  const { stdout: _, ...figures } = run;
  return {
    ...figures,
    mibPerSec: inputBytes / MiB / (run.ms / 1000),
    cpuSecondsPerGiB: cpuSeconds / (inputBytes / 1024 / MiB),
    outputMiB: completed.size / MiB,
  };
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

export async function benchBackup({ totalMiB = 2048, rounds = 5 } = {}) {
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
    const sink = await startSink(output);

    const keyFile = join(work, "key.txt");
    writeFileSync(keyFile, `${keys.identity}\n`, { mode: 0o600 });
    // The upload arrived whole, and the agent's backup opens with the standard tools and holds every file (and the manifest).
    const uploadedWhole = (file, completed) => {
      const sha256 = createHash("sha256").update(readFileSync(file)).digest("hex");
      if (sha256 !== completed.sha256) throw new Error("the sink's file is not what was uploaded");
    };
    const opensByHand = (file, completed) => {
      uploadedWhole(file, completed);
      const script = 'age -d -i "$1" "$2" | zstd -d | tar -tf - | grep -vc "^database/"';
      const listed = Number(execFileSync("bash", ["-o", "pipefail", "-c", script, "bench", keyFile, file]));
      if (listed !== files + 1) throw new Error(`the agent's backup lists ${listed} files besides the dump, not ${files + 1}`);
    };

    const options = { bundle, dir, uploadBase: sink.uploadBase, recipient: keys.recipient };
    const loadBefore = loadavg();
    const agent = [];
    const shell = [];
    let pureJs;
    try {
      // Alternating rounds spread the machine's drift over both.
      for (let i = 0; i < rounds; i++) {
        agent.push(await measure(() => runAgent({ ...options, mode: "native" }), sink, output, bytes, i === 0 ? opensByHand : undefined));
        shell.push(await measure(() => runShell(dir, keys.recipient, options), sink, output, bytes, i === 0 ? uploadedWhole : undefined));
      }
      pureJs = await measure(() => runAgent({ ...options, mode: "age-encryption" }), sink, output, bytes);
    } finally {
      await sink.close();
    }

    const summary = (runs) => ({
      runs,
      mibPerSec: median(runs.map((run) => run.mibPerSec)),
      cpuSecondsPerGiB: median(runs.map((run) => run.cpuSecondsPerGiB)),
      peakRssMiB: runs[0].peakRssMiB === undefined ? undefined : Math.max(...runs.map((run) => run.peakRssMiB)),
    });
    const agentOverShellByRound = agent.map((run, i) => run.mibPerSec / shell[i].mibPerSec);
    const cpuByRound = agent.map((run, i) => run.cpuSecondsPerGiB / shell[i].cpuSecondsPerGiB);
    return {
      inputMiB: bytes / MiB,
      files,
      // The machine is shared: its load (1, 5 and 15 minutes) before and after the rounds.
      loadAverage: { before: loadBefore, after: loadavg() },
      generateSeconds,
      rounds,
      agent: summary(agent),
      shell: summary(shell),
      pureJs: summary([pureJs]),
      ratios: {
        agentOverShell: median(agentOverShellByRound),
        agentOverShellByRound,
        pureJsOverAgent: pureJs.mibPerSec / median(agent.map((run) => run.mibPerSec)),
        agentOverShellCpu: median(cpuByRound),
        agentOverShellCpuByRound: cpuByRound,
      },
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The results as printed by `npm run bench`. */
export function backupReport(result) {
  const spread = (runs) => runs.map((run) => round(run.mibPerSec, 0)).join(", ");
  const row = (name, summary) => [
    name,
    round(summary.mibPerSec, 0),
    summary.runs.length > 1 ? spread(summary.runs) : "",
    round(summary.cpuSecondsPerGiB, 2),
    round(summary.runs[0].outputMiB, 0),
    summary.peakRssMiB === undefined ? "" : round(summary.peakRssMiB, 1),
  ];
  const byRound = (ratios) => ratios.map((r) => round(r)).join(", ");
  return [
    `Backup of a generated homeserver: ${round(result.inputMiB, 0)} MiB in ${result.files} files plus a database dump (mostly random media of 50 KiB–8 MiB, ` +
      `10% compressible text; generated in ${round(result.generateSeconds, 0)} s), from the page cache, uploaded in 8 MiB parts to a local sink; ` +
      `${result.rounds} alternating rounds of agent and shell, medians; Node run as the agent's package runs it (${AGENT_NODE_FLAGS.join(" ")}); load average ${result.loadAverage.before.map((l) => round(l)).join(" ")} before, ` +
      `${result.loadAverage.after.map((l) => round(l)).join(" ")} after`,
    table(
      ["pipeline", "MiB/s", "per round", "CPU s/GiB", "uploaded MiB", "peak RSS MiB (VmHWM)"],
      [
        row("agent: tar → zstd -1 → age (node:zlib, node:crypto) → upload", result.agent),
        row("shell: tar | zstd -1 -T1 | age (Debian) | the agent's upload", result.shell),
        row("agent with age-encryption (pure JS) as its age step", result.pureJs),
      ],
    ),
    "MiB/s: input MiB per second, each side timed from spawning its processes to their exit (one Node start each). " +
      `The agent's pipeline runs in a child process (RSS ${round(result.agent.runs[0].rssBeforeMiB, 1)} MiB before it started). ` +
      "CPU s/GiB: user + system time of all the side's processes and threads; the sink's (in the parent) is neither side's.",
    `Ratio agent ÷ shell (median of the rounds'): ${round(result.ratios.agentOverShell)} in throughput (per round ${byRound(result.ratios.agentOverShellByRound)}), ` +
      `${round(result.ratios.agentOverShellCpu)} in CPU time (per round ${byRound(result.ratios.agentOverShellCpuByRound)}); pure-JS age ÷ agent in throughput: ${round(result.ratios.pureJsOverAgent)}.`,
  ].join("\n");
}

if (process.argv[2] === "--child") {
  await runChild(JSON.parse(process.argv[3]));
} else if (import.meta.url === `file://${process.argv[1]}`) {
  const machine = machineInfo();
  console.log(`Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.platform}, Node ${machine.node}`);
  console.log(backupReport(await benchBackup()));
}
