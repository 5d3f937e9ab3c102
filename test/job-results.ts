// Results as agents report them, for tests that play the agent: the job
// catalogue (protocol/jobs.ts) records anything else as a failure.

/** A homeserver that runs: what provision, start, resume, upgrade and restore report. */
export function runningHomeserver(serverId: string, serverName: string) {
  const container = (role: string) => ({ name: `berth-${serverId.slice(0, 12)}-${role}`, id: "c".repeat(64) });
  return {
    serverId,
    serverName,
    state: "running",
    synapseVersion: "1.163.2",
    image: "berth/synapse:latest",
    ipAddress: "172.30.0.2",
    containers: { synapse: container("synapse"), postgres: container("postgres") },
  };
}
