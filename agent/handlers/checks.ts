// homeserver.checks: the promise checks only a host can see, run against one homeserver of this
// host (agent/checks), and what its running Synapse says it is. The payload names the server and
// the checks, nothing else: no user, room or address a check acts on comes from it.
import type { DiskEncryption } from "../../protocol/messages.ts";
import { checkDiskEncryption } from "../checks/disk-encryption.ts";
import { checkEncryptionByDefault } from "../checks/encryption-by-default.ts";
import { runHostChecks, type HostChecks } from "../checks/index.ts";
import { HomeserverNotFound } from "../homeserver/core.ts";
import type { HomeserverManager } from "../homeserver/manager.ts";
import { errorMessage } from "../log.ts";
import type { JobHandlers } from "./types.ts";

export function checksHandlers(manager: HomeserverManager, diskEncryption: () => DiskEncryption): JobHandlers<"homeserver.checks"> {
  return {
    "homeserver.checks": async ({ serverId, checks }, ctx) => {
      if (!manager.records.read(serverId)) throw new HomeserverNotFound(`homeserver ${serverId} is not provisioned on this host`);
      const hostChecks: HostChecks = {
        "encryption-by-default": () =>
          checkEncryptionByDefault({
            configured: () => manager.configuredRoomEncryption(serverId, ctx.dataRoot),
            probe: () => manager.probeRoomEncryption(serverId, ctx),
          }),
        "disk-encryption": () => checkDiskEncryption(diskEncryption()),
      };
      const outcomes = await runHostChecks(checks, hostChecks, ctx);
      const synapse = await manager.runningSynapse(serverId, ctx.signal).catch((error: unknown) => {
        ctx.log.warn("the running Synapse's version could not be read", { serverId, error: errorMessage(error) });
        return undefined;
      });
      return { serverId, outcomes, ...(synapse ? { synapse } : {}) };
    },
  };
}
