// A homeserver kind as the job runner calls it (through the registry, which checks payloads against
// the catalogue), on an agent without a Docker Engine: for tests of what a payload may say.
import { join } from "node:path";
import { generateHostKey } from "../../../agent/credentials.ts";
import { homeserverHandlers } from "../../../agent/handlers/homeserver.ts";
import { HandlerRegistry } from "../../../agent/handlers/registry.ts";
import { DockerRuntime } from "../../../agent/runtime/docker.ts";
import { tempDir } from "../helpers.ts";

export function homeserverKindWithoutDocker(kind: string) {
  const root = tempDir();
  // No Docker socket: a payload that got past its checks would fail differently, not with a JobInputError.
  const runtime = new DockerRuntime({ socketPath: join(root, "no-docker.sock") });
  const { handlers } = homeserverHandlers({
    stateDir: join(root, "state"),
    runtime,
    diskEncryption: () => ({ dataRoot: join(root, "data"), encrypted: true, devices: ["dm-0"], allowUnencrypted: false }),
    agentIdentity: { hostId: "host-1", privateKey: generateHostKey() },
  });
  return new HandlerRegistry().registerAll(handlers).get(kind)!;
}
