// `npm run dev` (scripts/dev.mjs) is the whole product or nothing: when its local agent cannot
// enroll, it says why and stops, rather than leave a Worker that answers but has no capacity.
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { reservePort, reservePortPair } from "../ports.ts";
import { REPO_ROOT, runCleanups, tempRoot, waitFor, withTimeout } from "./agent-helpers";

afterAll(runCleanups);

describe("npm run dev", () => {
  it("stops everything, saying why, when the local agent cannot enroll", { timeout: 180_000 }, async () => {
    const state = join(tempRoot("berth-e2e-dev-script-"), "state");
    mkdirSync(state, { recursive: true });
    // The agent's config directory cannot be made: a file holds its name.
    writeFileSync(join(state, "agent"), "not a directory\n");
    const port = await reservePort();
    const child = spawn(
      process.execPath,
      [
        join(REPO_ROOT, "scripts", "dev.mjs"),
        "--port",
        String(port),
        "--stripe-port",
        "0",
        "--https-port",
        String(await reservePortPair()),
        "--persist-to",
        state,
      ],
      { cwd: REPO_ROOT, detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, FORCE_COLOR: "0" } },
    );
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk));
    const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      const code = await withTimeout(exit, 150_000, "dev.mjs to stop");
      expect(code, output).toBe(1);
      expect(output).toContain("the local berth-agent could not start: the local agent could not enroll (exit 1)");
      // The Worker it had started goes too.
      await waitFor(
        "the Worker to stop answering",
        () =>
          fetch(`http://127.0.0.1:${port}/api/health`, { signal: AbortSignal.timeout(2_000) }).then(
            () => false,
            () => true,
          ),
        { timeoutMs: 20_000, intervalMs: 250 },
      );
    } finally {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // the group is gone
      }
    }
  });
});
