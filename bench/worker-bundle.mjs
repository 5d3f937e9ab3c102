// The Worker as Cloudflare would load it:
//
//  1. Bundle size: `wrangler deploy --dry-run --outdir <temp> --minify` (what a deploy uploads,
//     minified), its main module's bytes and gzip bytes (gzip level 9; Cloudflare's size limit is
//     on the compressed upload: 3 MB on Workers Free, 10 MB on Workers Paid).
//  2. Startup: `wrangler check startup --args=--minify` `runs` times, each a CPU profile of the
//     Worker's global scope being parsed and run in a local workerd; from each profile the time
//     sampled busy (every sample but "(idle)"), as wrangler's own summary counts "Active". Cloudflare's
//     startup limit is 1 s; the profile runs on this machine's CPU, not Cloudflare's.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { percentile, root } from "./lib.mjs";

// Run by this Node (22, from the `node` package), not by whatever `node` the bin's shebang finds.
const wrangler = join(root, "node_modules", "wrangler", "bin", "wrangler.js");

function run(args, what) {
  const answer = spawnSync(process.execPath, [wrangler, ...args], {
    cwd: root,
    encoding: "utf8",
    timeout: 300_000,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
  });
  if (answer.status !== 0) throw new Error(`${what} failed (${answer.status ?? answer.signal}): ${(answer.stderr || answer.stdout).slice(-2000)}`);
  return answer.stdout;
}

/** Milliseconds a CPU profile spent on anything but idling. */
function activeMs(profile) {
  const idle = new Set(profile.nodes.filter((node) => node.callFrame.functionName === "(idle)").map((node) => node.id));
  let micros = 0;
  // timeDeltas[i] is the time before sample i; sample i's node ran for timeDeltas[i + 1].
  for (let i = 0; i < profile.samples.length - 1; i++) if (!idle.has(profile.samples[i])) micros += profile.timeDeltas[i + 1];
  return micros / 1000;
}

export async function benchWorkerBundle({ runs = 5 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "berth-bench-bundle-"));
  try {
    const out = join(dir, "out");
    run(["deploy", "--dry-run", "--outdir", out, "--minify"], "wrangler deploy --dry-run");
    const modules = readdirSync(out).filter((name) => /\.(m?js|wasm)$/.test(name));
    const bytes = modules.reduce((sum, name) => sum + statSync(join(out, name)).size, 0);
    const gzipBytes = modules.reduce((sum, name) => sum + gzipSync(readFileSync(join(out, name)), { level: 9 }).length, 0);
    const startupMs = [];
    for (let i = 0; i < runs; i++) {
      const outfile = join(dir, `startup-${i}.cpuprofile`);
      run(["check", "startup", "--outfile", outfile, "--args=--minify"], "wrangler check startup");
      startupMs.push(activeMs(JSON.parse(readFileSync(outfile, "utf8"))));
    }
    const sorted = [...startupMs].sort((a, b) => a - b);
    return { modules, bytes, gzipBytes, startupMs, startupMedianMs: percentile(sorted, 50), runs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
