// The agent's handlers are the job catalogue's (protocol/jobs.ts): one per kind, none for a kind it lacks,
// and every payload and result checked against the kind's schemas.
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { JOB_KINDS } from "../../../protocol/jobs.ts";
import { generateHostKey } from "../../../agent/credentials.ts";
import { builtinHandlers, homeserverHandlers } from "../../../agent/handlers/index.ts";
import { HandlerRegistry } from "../../../agent/handlers/registry.ts";
import { JobInputError } from "../../../agent/handlers/types.ts";
import { DockerRuntime } from "../../../agent/runtime/docker.ts";
import { runCleanups, jobContext, tempDir } from "../helpers.ts";

afterEach(runCleanups);

describe("the agent's job handlers", () => {
  it("cover every kind of the catalogue, and nothing else", () => {
    const root = tempDir();
    const diskEncryption = () => ({ dataRoot: join(root, "data"), encrypted: true, devices: ["dm-0"], allowUnencrypted: false });
    const homeservers = homeserverHandlers({
      stateDir: join(root, "state"),
      runtime: new DockerRuntime({ socketPath: join(root, "no-docker.sock") }),
      diskEncryption,
      agentIdentity: { hostId: "host-1", privateKey: generateHostKey() },
    });
    const registry = builtinHandlers({ diskEncryption, onInventoryChanged: () => {}, homeservers: homeservers.handlers });
    expect(registry.kinds()).toEqual([...JOB_KINDS].sort());
  });

  it("a kind the catalogue lacks cannot be registered, nor a kind twice", () => {
    const registry = new HandlerRegistry();
    // @ts-expect-error not a kind of the catalogue: the registry's type refuses it
    expect(() => registry.register("homeserver.teleport", async () => ({}))).toThrow(/"homeserver.teleport" is not a kind of the job catalogue/);
    registry.register("noop", async () => ({ ok: true }));
    expect(() => registry.register("noop", async () => ({ ok: true }))).toThrow(/registered already/);
    expect(registry.kinds()).toEqual(["noop"]);
    expect(registry.get("homeserver.teleport")).toBeUndefined();
  });

  it("a handler gets its kind's payload type and must return its kind's result type", () => {
    const registry = new HandlerRegistry();
    registry.register("sleep", async ({ ms }) => ({ sleptMs: ms }));
    // @ts-expect-error noop's payload has no `seconds`
    registry.register("noop", async ({ seconds }) => ({ ok: true, seconds }));
    // @ts-expect-error workload.remove must report `removed`
    registry.register("workload.remove", async ({ id }) => ({ id }));
    expect(registry.kinds()).toEqual(["noop", "sleep", "workload.remove"]);
  });

  it("refuses a bad payload with an error naming the field, before the handler runs", async () => {
    let ran = false;
    const run = new HandlerRegistry()
      .register("workload.ensure", async ({ id, kind }) => {
        ran = true;
        return { id, kind, state: "running", changed: false };
      })
      .get("workload.ensure")!;
    const refusal = run({ id: "../etc", kind: "test", spec: null }, jobContext("workload.ensure"));
    await expect(refusal).rejects.toBeInstanceOf(JobInputError);
    await expect(refusal).rejects.toThrow(/^workload.ensure: invalid payload: id: /);
    await expect(run({ id: "w-1", spec: null }, jobContext("workload.ensure"))).rejects.toThrow(/^workload.ensure: invalid payload: kind: /);
    expect(ran).toBe(false);
  });
});
