// Runs one homeserver.provision in its own process, so that a test can kill it
// (SIGKILL, like a crashed agent) at a chosen step. Options come as JSON in
// $BERTH_TEST_CHILD; each progress report is printed as a JSON line.
import { generateHostKey } from "../../../agent/credentials.ts";
import { homeserverHandlers } from "../../../agent/handlers/homeserver.ts";
import { createLogger } from "../../../agent/log.ts";
import { IptablesFirewall } from "../../../agent/network/firewall.ts";
import { DockerRuntime } from "../../../agent/runtime/docker.ts";

const options = JSON.parse(process.env.BERTH_TEST_CHILD ?? "{}") as {
  stateDir: string;
  dataRoot: string;
  labels: Record<string, string>;
  healthcheck: { intervalMs: number; startPeriodMs: number };
  spec: Record<string, unknown>;
};
const print = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`);
const log = createLogger({ level: "info", write: (line) => print({ log: JSON.parse(line) }) });
const { handlers } = homeserverHandlers({
  stateDir: options.stateDir,
  runtime: new DockerRuntime({ log }),
  firewall: new IptablesFirewall({ log }),
  log,
  healthcheck: options.healthcheck,
  trustedKeyServers: [],
  extraLabels: options.labels,
  diskEncryption: () => ({ dataRoot: options.dataRoot, encrypted: false, devices: ["test"], allowUnencrypted: true }),
  agentIdentity: { hostId: "provision-child", privateKey: generateHostKey() },
});
const result = await handlers["homeserver.provision"](options.spec as never, {
  progress: (progress, message) => print({ progress, message }),
  signal: new AbortController().signal,
  dataRoot: options.dataRoot,
  log,
  job: { id: "child", kind: "homeserver.provision", attempt: 1, deadline: Date.now() + 600_000 },
});
print({ result });
