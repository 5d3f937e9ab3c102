// The agent's version: from agent/package.json, found by walking up from this
// module (agent/version.ts in development, dist/berth-agent.mjs once bundled).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

let cached: string | undefined;

export function agentVersion(): string {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: unknown; version?: unknown };
      if (pkg.name === "berth-agent" && typeof pkg.version === "string") {
        cached = pkg.version;
        return cached;
      }
    } catch {
      // no package.json here
    }
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  cached = "0.0.0-unknown";
  return cached;
}
