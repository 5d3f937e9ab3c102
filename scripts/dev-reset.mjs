#!/usr/bin/env node
// `npm run dev:reset`: forgets the local product. The homeservers the local
// agents made (containers, networks, firewall rules, data) outlive `npm run dev`
// on purpose, like a real host's; this removes them through each agent's own
// destroy path (which, in a host namespace, touches only that agent's), then the
// whole state directory (D1, the agents' identities, the Caddies' CAs). Stop
// `npm run dev` first.
//
//   node scripts/dev-reset.mjs [--persist-to .wrangler/state]
import { existsSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadConfig } from "../agent/config.ts";
import { HomeserverManager } from "../agent/homeserver/manager.ts";
import { IptablesFirewall } from "../agent/network/firewall.ts";
import { DockerRuntime } from "../agent/runtime/docker.ts";
import { localAgentConfigDirs } from "./local-hosts.mjs";

/** Destroys every homeserver of the dev agents of `stateDir` (the single host's, and each of --hosts N's); returns their ids. */
export async function destroyDevHomeservers(stateDir) {
  const ids = [];
  for (const configDir of localAgentConfigDirs(stateDir)) ids.push(...(await destroyAgentHomeservers(configDir)));
  return ids;
}

/** Destroys every homeserver of the agent whose config is in `configDir`, through the agent's own destroy path; returns their ids. */
export async function destroyAgentHomeservers(configDir) {
  if (!existsSync(join(configDir, "agent.json"))) return [];
  const config = loadConfig(configDir);
  const manager = new HomeserverManager({
    stateDir: config.stateDir,
    hostNamespace: config.hostNamespace,
    runtime: new DockerRuntime({}),
    firewall: new IptablesFirewall({}),
  });
  const ids = manager.listRecordIds();
  const ctx = { dataRoot: config.dataRoot, signal: new AbortController().signal, progress: () => undefined };
  for (const serverId of ids) await manager.destroy(serverId, ctx);
  return ids;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // Parsed here, not on import: an importer's own arguments are not this script's.
  const root = fileURLToPath(new URL("..", import.meta.url));
  const { values: options } = parseArgs({ options: { "persist-to": { type: "string", default: join(root, ".wrangler", "state") } } });
  const persistTo = resolve(options["persist-to"]);
  const ids = await destroyDevHomeservers(persistTo);
  for (const id of ids) console.log(`[dev:reset] homeserver ${id} destroyed`);
  rmSync(persistTo, { recursive: true, force: true });
  console.log(`[dev:reset] removed ${persistTo}`);
}
