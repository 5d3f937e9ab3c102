#!/usr/bin/env node
// `npm test`: the style check (Biome), the type check, then every vitest project
// (workerd tests and the end-to-end tests against `npm run dev` in Chromium), closing
// with one plain "N passed, N failed" line that CI reads. The style check and the type
// check count as one test each.
//
// With no arguments, the projects run in two vitest processes side by side (docs/decisions.md,
// "Test files run at once"): the hermetic lane (`worker`, `tools`), which shares nothing with the
// machine but its CPUs, and the host lane (`agent`, then `e2e`), whose files take the Docker
// Engine, iptables and the local agent one at a time. Each line of their output is prefixed with
// its lane. With arguments (`npm test -- --project worker`), one vitest process runs with them.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const resultsDir = join(root, "test-results");
const vitest = join(dirname(require.resolve("vitest/package.json")), "vitest.mjs");

const LANES = [
  { name: "hermetic", projects: ["worker", "tools"] },
  { name: "host", projects: ["agent", "e2e"] },
];

function run(script, args, { env = process.env, prefix = null } = {}) {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [script, ...args], { cwd: root, env, stdio: prefix ? ["ignore", "pipe", "pipe"] : "inherit" });
    if (prefix) {
      for (const [stream, out] of [
        [child.stdout, process.stdout],
        [child.stderr, process.stderr],
      ]) {
        createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) => out.write(`${prefix} ${line}\n`));
      }
    }
    child.on("close", (code, signal) => resolvePromise(code ?? (signal ? 1 : 0)));
  });
}

/** One vitest process writing its JSON report to `resultsFile`; resolves to its exit code. */
function runVitest(args, resultsFile, options) {
  rmSync(resultsFile, { force: true });
  return run(vitest, ["run", "--reporter=default", "--reporter=json", `--outputFile.json=${resultsFile}`, ...args], options);
}

console.log("== style (biome)");
// Formatting and lint findings alike, warnings included: `npm run format` and `npm run lint -- --write` fix most.
const styleOk = (await run(require.resolve("@biomejs/biome/bin/biome"), ["ci", "--error-on-warnings", "."])) === 0;
console.log(styleOk ? "style check passed" : "style check FAILED");

console.log("== type check (tsc, strict)");
const tsc = require.resolve("typescript/bin/tsc");
// Everything strict; and the code Node runs as TypeScript (agent, protocol, scripts) free of syntax type stripping cannot handle.
const typecheckOk = (await run(tsc, ["-p", "."])) === 0 && (await run(tsc, ["-p", "tsconfig.agent.json"])) === 0;
console.log(typecheckOk ? "type check passed" : "type check FAILED");

mkdirSync(resultsDir, { recursive: true });
console.log("== vitest");
const args = process.argv.slice(2);
const runs =
  args.length > 0
    ? [{ resultsFile: join(resultsDir, "vitest.json"), code: runVitest(args, join(resultsDir, "vitest.json")) }]
    : LANES.map(({ name, projects }) => {
        const resultsFile = join(resultsDir, `vitest-${name}.json`);
        const projectArgs = projects.flatMap((project) => ["--project", project]);
        // vitest.config.ts gives the hermetic lane one core fewer when the host lane runs beside it.
        const env = { ...process.env, BERTH_TEST_LANE: name };
        return { resultsFile, code: runVitest(projectArgs, resultsFile, { env, prefix: `[${name}]` }) };
      });

let passed = (styleOk ? 1 : 0) + (typecheckOk ? 1 : 0);
let failed = (styleOk ? 0 : 1) + (typecheckOk ? 0 : 1);
let skipped = 0;
for (const { resultsFile, code } of runs) {
  const vitestCode = await code;
  let counted = 0;
  if (existsSync(resultsFile)) {
    const results = JSON.parse(readFileSync(resultsFile, "utf8"));
    passed += results.numPassedTests;
    counted += results.numFailedTests;
    skipped += results.numPendingTests + results.numTodoTests;
    // A file that failed to load has no tests to count: count it as a failure.
    counted += results.testResults.filter((file) => file.status === "failed" && file.assertionResults.length === 0).length;
  } else {
    counted += 1;
  }
  if (vitestCode !== 0 && counted === 0) counted = 1;
  failed += counted;
}

console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed > 0 ? 1 : 0);
