// homeserver.checks as the job runner calls it (through the registry, which checks payloads
// against the catalogue), without Docker: the payload names a server of this host and the checks,
// and nothing else. A server the host does not run fails the job; no payload can name a user, a
// room or an address for a check to act on, nor a check that is not a host's.
import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { CHECK_IDS, HOST_CHECK_IDS } from "../../../protocol/checks.ts";
import { JobInputError, type Json } from "../../../agent/handlers/types.ts";
import { homeserverKindWithoutDocker } from "../handlers/without-docker.ts";
import { jobContext, runCleanups } from "../helpers.ts";

afterEach(runCleanups);

const KIND = "homeserver.checks";

function checksJob() {
  const run = homeserverKindWithoutDocker(KIND);
  return (payload: Record<string, unknown>) => run(payload as Json, jobContext(KIND));
}

describe("homeserver.checks", () => {
  it("fails for a server this host does not run, before any check runs", async () => {
    await expect(checksJob()({ serverId: randomUUID(), checks: [...HOST_CHECK_IDS] })).rejects.toThrow(/is not provisioned on this host/);
  });

  it("refuses a check that is not a host's, an unknown one, none, or one twice", async () => {
    const run = checksJob();
    const serverId = randomUUID();
    const notHosts = CHECK_IDS.filter((id) => !(HOST_CHECK_IDS as readonly string[]).includes(id));
    for (const checks of [...notHosts.map((id) => [id]), ["encryption"], [], ["disk-encryption", "disk-encryption"]]) {
      const refusal = run({ serverId, checks });
      await expect(refusal, JSON.stringify(checks)).rejects.toBeInstanceOf(JobInputError);
      await expect(refusal, JSON.stringify(checks)).rejects.toThrow(/^homeserver\.checks: invalid payload: checks/);
    }
  });

  it("cannot be aimed at a user, a room, an address or another server: the server id decides everything", async () => {
    const run = checksJob();
    const serverId = randomUUID();
    for (const extra of [
      { userId: "@alice:chat.example.org" },
      { probeUser: "alice" },
      { roomId: "!room:chat.example.org" },
      { baseUrl: "http://10.0.0.1:8008" },
      { serverName: "other.example.org" },
      { serverIds: [randomUUID()] },
    ]) {
      await expect(run({ serverId, checks: ["encryption-by-default"], ...extra }), JSON.stringify(extra)).rejects.toBeInstanceOf(JobInputError);
    }
  });
});
