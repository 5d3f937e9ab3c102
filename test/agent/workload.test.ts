import { existsSync, readFileSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { DiskEncryption } from "../../protocol/messages.ts";
import { HandlerRegistry } from "../../agent/handlers/registry.ts";
import type { JobContext } from "../../agent/handlers/types.ts";
import { workloadHandlers } from "../../agent/handlers/workload.ts";
import { listWorkloads, markerPath } from "../../agent/inventory.ts";
import { silentLogger } from "../../agent/log.ts";
import { runCleanups, tempDir } from "./helpers.ts";

afterEach(runCleanups);

function setup(encryption: Partial<DiskEncryption>) {
  const dataRoot = join(tempDir(), "berth"); // not created yet: ensure makes what it needs
  let changes = 0;
  const handlers = workloadHandlers({
    diskEncryption: () => ({ dataRoot, encrypted: false, devices: ["vda"], allowUnencrypted: false, ...encryption }),
    onInventoryChanged: () => changes++,
  });
  const ctx: JobContext = {
    progress: () => {},
    signal: new AbortController().signal,
    dataRoot,
    log: silentLogger,
    job: { id: "j", kind: "workload.ensure", attempt: 1, deadline: Date.now() + 1000 },
  };
  return { handlers, ctx, dataRoot, changes: () => changes };
}

describe("workload.ensure / workload.remove", () => {
  it("refuses customer data on an unencrypted data root and writes nothing", async () => {
    const { handlers, ctx, dataRoot, changes } = setup({ encrypted: false, allowUnencrypted: false });
    await expect(handlers["workload.ensure"]({ id: "hs-1", kind: "homeserver", spec: {} }, ctx)).rejects.toThrow(
      /refusing to place customer data.*not on an encrypted.*--allow-unencrypted-data-root/,
    );
    expect(existsSync(markerPath(dataRoot, "hs-1"))).toBe(false);
    expect(changes()).toBe(0);
  });

  it.each([
    ["encrypted", { encrypted: true }],
    ["allowed by the development flag", { encrypted: false, allowUnencrypted: true }],
  ])("places the marker when %s, idempotently", async (_label, encryption) => {
    const { handlers, ctx, dataRoot, changes } = setup(encryption);
    const payload = { id: "hs-1", kind: "homeserver", spec: { plan: "starter" } };
    expect(await handlers["workload.ensure"](payload, ctx)).toEqual({ id: "hs-1", kind: "homeserver", state: "running", changed: true });
    expect(await handlers["workload.ensure"](payload, ctx)).toMatchObject({ changed: false });
    expect(changes()).toBe(1);
    expect(statSync(markerPath(dataRoot, "hs-1")).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(markerPath(dataRoot, "hs-1"), "utf8"))).toMatchObject(payload);
    expect(listWorkloads(dataRoot)).toEqual([{ id: "hs-1", kind: "homeserver", state: "running" }]);

    await handlers["workload.ensure"]({ ...payload, spec: { plan: "team" } }, ctx);
    expect(changes()).toBe(2);

    expect(await handlers["workload.remove"]({ id: "hs-1" }, ctx)).toEqual({ id: "hs-1", removed: true });
    expect(await handlers["workload.remove"]({ id: "hs-1" }, ctx)).toEqual({ id: "hs-1", removed: false });
    expect(changes()).toBe(3);
    expect(listWorkloads(dataRoot)).toEqual([]);
  });

  it("rejects ids that are not safe file names", async () => {
    const { handlers, ctx } = setup({ encrypted: true });
    const registry = new HandlerRegistry().registerAll(handlers);
    for (const id of ["../etc", "a/b", ".hidden", ""]) {
      await expect(registry.get("workload.ensure")!({ id, kind: "k", spec: null }, ctx)).rejects.toThrow(/^workload.ensure: invalid payload: id: /);
      await expect(registry.get("workload.remove")!({ id }, ctx)).rejects.toThrow(/^workload.remove: invalid payload: id: /);
    }
  });

  it("the inventory skips unreadable markers", () => {
    const dataRoot = tempDir();
    mkdirSync(join(dataRoot, "workloads"));
    writeFileSync(join(dataRoot, "workloads", "bad.json"), "{");
    writeFileSync(join(dataRoot, "workloads", "ok.json"), JSON.stringify({ id: "ok", kind: "k", spec: 1, updatedAt: 1 }));
    writeFileSync(join(dataRoot, "workloads", "mismatch.json"), JSON.stringify({ id: "other", kind: "k", spec: 1, updatedAt: 1 }));
    expect(listWorkloads(dataRoot)).toEqual([{ id: "ok", kind: "k", state: "running" }]);
  });
});
