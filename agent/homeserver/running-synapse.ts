// What the running Synapse of a server says it is, and the image its container runs: the
// promise checks report them for the Worker's software check.
import { SYNAPSE_PORT } from "./config.ts";
import type { HomeserverCore } from "./core.ts";
import { baseUrl, serverVersion } from "./synapse-api.ts";

/** Nothing when Synapse is not running (stopped, suspended): there is no version to ask. */
export async function runningSynapse(core: HomeserverCore, serverId: string, signal: AbortSignal): Promise<{ version: string; image: string } | undefined> {
  const names = core.names(serverId);
  const container = await core.runtime.inspectContainer(names.synapse);
  if (!container?.State.Running) return undefined;
  const version = await serverVersion(baseUrl(await core.synapseAddress(names), SYNAPSE_PORT), signal);
  return { version, image: container.Config.Image };
}
