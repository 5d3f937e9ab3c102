import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { audit, readAudit, type AuditQuery } from "../../../worker/audit/audit";
import { database } from "../../../worker/db/client";

// Reading the audit log as operators filter it: by actors, an action or its family, a target, a
// time range, and page by page (older than an entry), newest first.

const db = database(env.DB);
const at = (minute: number) => new Date(Date.UTC(2030, 0, 1, 12, minute));

describe("readAudit", () => {
  const target = `audit-read-${crypto.randomUUID()}`;
  const operator = `user:${crypto.randomUUID()}` as const;
  const host = `host:${crypto.randomUUID()}` as const;

  beforeAll(async () => {
    await db.batch([
      audit(db, at(0), host, "host.enrolled", target),
      audit(db, at(1), operator, "host.state_changed", target, { from: "active", to: "draining" }),
      audit(db, at(2), operator, "hostx.made_up", target),
      audit(db, at(3), "system", "host_state.look_alike", target),
      audit(db, at(4), operator, "host.revoked", target),
    ]);
  });

  const actions = async (query: Omit<AuditQuery, "limit" | "target">) => (await readAudit(db, { limit: 100, target, ...query })).map((row) => row.action);

  it("reads a target's entries newest first, up to the limit", async () => {
    expect(await actions({})).toEqual(["host.revoked", "host_state.look_alike", "hostx.made_up", "host.state_changed", "host.enrolled"]);
    expect((await readAudit(db, { limit: 2, target })).map((row) => row.action)).toEqual(["host.revoked", "host_state.look_alike"]);
    expect(await readAudit(db, { limit: 100, target: `${target}-other` })).toEqual([]);
  });

  it("matches an action exactly, or a family by its name before the dot, never as a pattern", async () => {
    expect(await actions({ action: "host.state_changed" })).toEqual(["host.state_changed"]);
    expect(await actions({ action: "host" })).toEqual(["host.revoked", "host.state_changed", "host.enrolled"]);
    // "_" and "%" are plain characters here, not LIKE's wildcards.
    expect(await actions({ action: "host_state" })).toEqual(["host_state.look_alike"]);
    expect(await actions({ action: "host%" })).toEqual([]);
    expect(await actions({ action: "hos" })).toEqual([]);
  });

  it("keeps the entries of the actors given; an empty list keeps none", async () => {
    expect(await actions({ actors: [operator] })).toEqual(["host.revoked", "hostx.made_up", "host.state_changed"]);
    expect(await actions({ actors: [host, "system"] })).toEqual(["host_state.look_alike", "host.enrolled"]);
    expect(await actions({ actors: [] })).toEqual([]);
  });

  it("bounds time from (included) until (excluded), and pages by the last entry's id", async () => {
    expect(await actions({ from: at(1), until: at(3) })).toEqual(["hostx.made_up", "host.state_changed"]);
    const [newest, second] = await readAudit(db, { limit: 2, target });
    expect(await actions({ beforeId: second!.id })).toEqual(["hostx.made_up", "host.state_changed", "host.enrolled"]);
    expect(await actions({ beforeId: newest!.id, actors: [operator] })).toEqual(["hostx.made_up", "host.state_changed"]);
  });
});
