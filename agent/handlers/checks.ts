// homeserver.checks: the promise checks only a host can see, run against one homeserver of this
// host (agent/checks), and what its running Synapse says it is. The payload names the server and
// the checks, nothing else: no user, room or address a check acts on comes from it.
import type { JobPayload, JobResult } from "../../protocol/jobs.ts";
import type { DiskEncryption } from "../../protocol/messages.ts";
import { checkCertificate } from "../checks/certificates.ts";
import { checkDelegation, type DelegationCheckInput } from "../checks/delegation.ts";
import { checkDiskEncryption } from "../checks/disk-encryption.ts";
import { checkEncryptionByDefault } from "../checks/encryption-by-default.ts";
import { runHostChecks, type HostChecks } from "../checks/index.ts";
import { HomeserverNotFound } from "../homeserver/core.ts";
import type { HomeserverManager } from "../homeserver/manager.ts";
import { servedHostOf } from "../homeserver/records.ts";
import { errorMessage } from "../log.ts";
import type { JobHandlers } from "./types.ts";

/** What the certificates and isolation checks need of the host beyond the homeserver's own records. */
export interface HostCheckSettings {
  /** The proxy's HTTPS listener and the roots its certificates should chain to (undefined: the public roots). Without a proxy, nothing to check. */
  certificates?: { proxy: { host: string; port: number }; trustedRoots: () => Promise<string | undefined> };
  /** The host's private services by port (the proxy's admin API): no homeserver may reach them. */
  privatePorts: Array<{ what: string; port: number }>;
  /** Development and tests only: how to reach the stand-ins for customers' domains (their roots, addresses, port); production fetches public HTTPS. */
  delegation?: () => Promise<DelegationStandIn>;
}

export type DelegationStandIn = Pick<DelegationCheckInput, "trustedRoots" | "allowPrivateAddresses" | "resolve" | "domainPort">;

export function checksHandlers(
  manager: HomeserverManager,
  diskEncryption: () => DiskEncryption,
  settings: HostCheckSettings = { privatePorts: [] },
): JobHandlers<"homeserver.checks" | "homeserver.delegation_check"> {
  return {
    "homeserver.checks": async ({ serverId, checks }, ctx) => {
      const record = manager.records.read(serverId);
      if (!record) throw new HomeserverNotFound(`homeserver ${serverId} is not provisioned on this host`);
      const { certificates } = settings;
      const hostChecks: HostChecks = {
        "encryption-by-default": () =>
          checkEncryptionByDefault({
            configured: () => manager.configuredRoomEncryption(serverId, ctx.dataRoot),
            probe: () => manager.probeRoomEncryption(serverId, ctx),
          }),
        "disk-encryption": () => checkDiskEncryption(diskEncryption()),
        isolation: () => manager.checkIsolation(serverId, settings.privatePorts, ctx.signal),
        ...(certificates
          ? {
              certificates: async () =>
                checkCertificate({ serverName: servedHostOf(record), proxy: certificates.proxy, trustedRoots: await certificates.trustedRoots() }),
            }
          : {}),
      };
      const outcomes = await runHostChecks(checks, hostChecks, ctx);
      const synapse = await manager.runningSynapse(serverId, ctx.signal).catch((error: unknown) => {
        ctx.log.warn("the running Synapse's version could not be read", { serverId, error: errorMessage(error) });
        return undefined;
      });
      return { serverId, outcomes, ...(synapse ? { synapse } : {}) };
    },
    "homeserver.delegation_check": async (payload) => delegationCheck(payload, await settings.delegation?.()),
  };
}

/**
 * homeserver.delegation_check. The domain comes from the control plane (the homeserver may not exist
 * on this host yet); what it can make the host fetch is bounded by the check itself: public
 * addresses only, pinned, small and quick.
 */
export async function delegationCheck(
  { serverId, serverName, publicBaseUrl }: JobPayload<"homeserver.delegation_check">,
  standIn?: DelegationStandIn,
): Promise<JobResult<"homeserver.delegation_check">> {
  const served = new URL(publicBaseUrl);
  const outcome = await checkDelegation({ ...standIn, serverName, servedHost: served.hostname, servedPort: served.port ? Number(served.port) : 443 });
  return { serverId, serverName, outcome };
}
