#!/usr/bin/env node
// `npm test`: the style check (Biome), the type check, then every vitest project
// (workerd tests and the end-to-end tests against `npm run dev` in Chromium), closing
// with one plain "N passed, N failed" line that CI reads. The style check and the type
// check count as one test each.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const resultsFile = join(root, "test-results", "vitest.json");

function run(script, args) {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [script, ...args], { cwd: root, stdio: "inherit" });
    child.on("exit", (code, signal) => resolvePromise(code ?? (signal ? 1 : 0)));
  });
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

mkdirSync(dirname(resultsFile), { recursive: true });
rmSync(resultsFile, { force: true });
console.log("== vitest");
const vitestCode = await run(join(dirname(require.resolve("vitest/package.json")), "vitest.mjs"), [
  "run",
  "--reporter=default",
  "--reporter=json",
  `--outputFile.json=${resultsFile}`,
  ...process.argv.slice(2),
]);

let passed = (styleOk ? 1 : 0) + (typecheckOk ? 1 : 0);
let failed = (styleOk ? 0 : 1) + (typecheckOk ? 0 : 1);
let skipped = 0;
if (existsSync(resultsFile)) {
  const results = JSON.parse(readFileSync(resultsFile, "utf8"));
  passed += results.numPassedTests;
  failed += results.numFailedTests;
  skipped += results.numPendingTests + results.numTodoTests;
  // A file that failed to load has no tests to count: count it as a failure.
  failed += results.testResults.filter((file) => file.status === "failed" && file.assertionResults.length === 0).length;
} else {
  failed += 1;
}
if (vitestCode !== 0 && failed === 0) failed = 1;

console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed > 0 ? 1 : 0);
