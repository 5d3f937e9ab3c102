import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { generateAgeKeyPair } from "../../../agent/backup/age";
import { operatorCookie, type DeliveredJob } from "../fleet/fleet-helpers";
import { call, expectError, post } from "../helpers";
import { administeredServer, auditEntries, nextJob } from "../servers/administration-helpers";

// An operator's export of a homeserver under a legal request: audited with who, when, the reference
// and the scope; sent to the server's host as a homeserver.legal_export job; shown to the customer
// in their data export unless the operator records that notice is legally barred (also audited).

const recipient = generateAgeKeyPair().recipient;
const scope = { users: [], rooms: [], from: 1_700_000_000_000, content: true };

async function customerExport(cookie: string): Promise<string> {
  const response = await call("/api/me/export", { cookie });
  expect(response.status).toBe(200);
  return response.text();
}

async function auditByTarget(target: string) {
  const rows = await env.DB.prepare("SELECT actor, action, detail FROM audit_log WHERE target = ? ORDER BY id")
    .bind(target)
    .all<{ actor: string; action: string; detail: string }>();
  return rows.results.map((row) => ({ ...row, detail: JSON.parse(row.detail) as Record<string, unknown> }));
}

describe("legal-request exports", () => {
  it("an operator's export is audited with who, reference and scope, sent to the host, and shown to the customer", async () => {
    const server = await administeredServer();
    const operator = await operatorCookie();
    const operatorId = ((await (await call("/api/me", { cookie: operator })).json()) as { id: string }).id;
    const reference = `Court order ${crypto.randomUUID().slice(0, 8)}`;
    const response = await post(`/api/admin/servers/${server.id}/legal-exports`, { reference, scope, recipient }, { cookie: operator });
    expect(response.status).toBe(202);
    const created = (await response.json()) as { id: string; notice: string; jobId: string };
    expect(created.notice).toBe("given");

    const job: DeliveredJob = await nextJob(server, "homeserver.legal_export");
    expect(job.id).toBe(created.jobId);
    expect(job.payload).toMatchObject({ serverId: server.id, exportId: created.id, reference, scope, recipient });
    expect(String((job.payload as { uploadBase: string }).uploadBase)).toMatch(new RegExp(`/api/agent/legal-exports/${created.id}$`));

    expect(await auditEntries(server.id, "legal_export.requested")).toEqual([
      {
        actor: `user:${operatorId}`,
        action: "legal_export.requested",
        target: server.id,
        detail: { exportId: created.id, serverId: server.id, reference, scope },
      },
    ]);
    // The job is not the customer's: their views and data export list their server's jobs.
    const jobRow = await env.DB.prepare("SELECT server_id FROM jobs WHERE id = ?").bind(job.id).first<{ server_id: string | null }>();
    expect(jobRow).toEqual({ server_id: null });
    const seen = JSON.parse(await customerExport(server.owner.cookie)) as {
      account: { auditLog: Array<{ actor: string; action: string; detail: Record<string, unknown> }> };
    };
    expect(seen.account.auditLog).toContainEqual(
      expect.objectContaining({ actor: "operator", action: "legal_export.requested", detail: { reference, scope } }),
    );
  });

  it("with notice barred: audited (the request and the bar, with its reason), and nothing of it reaches the customer", async () => {
    const server = await administeredServer();
    const operator = await operatorCookie();
    const reference = `Sealed warrant ${crypto.randomUUID().slice(0, 8)}`;
    const reason = "non-disclosure order under the warrant";
    const response = await post(
      `/api/admin/servers/${server.id}/legal-exports`,
      { reference, scope, recipient, noticeBarred: { reason } },
      { cookie: operator },
    );
    expect(response.status).toBe(202);
    const created = (await response.json()) as { id: string; notice: string };
    expect(created.notice).toBe("barred");
    await nextJob(server, "homeserver.legal_export");

    expect((await auditByTarget(`legal-export:${created.id}`)).map((entry) => [entry.action, entry.detail])).toEqual([
      ["legal_export.requested", { exportId: created.id, serverId: server.id, reference, scope }],
      ["legal_export.notice_barred", { exportId: created.id, serverId: server.id, reason }],
    ]);
    expect(await auditEntries(server.id, "legal_export.requested")).toEqual([]);
    const seen = await customerExport(server.owner.cookie);
    for (const trace of [reference, created.id, "legal_export"]) expect(seen).not.toContain(trace);
  });

  it("only operators may ask; a missing server is 404; a recipient that is not age or an inverted range is refused", async () => {
    const server = await administeredServer();
    const body = { reference: "x", scope, recipient };
    await expectError(await post(`/api/admin/servers/${server.id}/legal-exports`, body, { cookie: server.owner.cookie }), 403, "operator_only");
    await expectError(await post(`/api/admin/servers/${server.id}/legal-exports`, body), 401);
    const operator = await operatorCookie();
    await expectError(await post("/api/admin/servers/no-such-server/legal-exports", body, { cookie: operator }), 404);
    await expectError(await post(`/api/admin/servers/${server.id}/legal-exports`, { ...body, recipient: "ssh-ed25519 AAAA" }, { cookie: operator }), 400);
    await expectError(
      await post(`/api/admin/servers/${server.id}/legal-exports`, { ...body, scope: { ...scope, from: 2, until: 1 } }, { cookie: operator }),
      400,
    );
    const count = await env.DB.prepare("SELECT count(*) AS n FROM legal_exports WHERE server_id = ?").bind(server.id).first<{ n: number }>();
    expect(count!.n).toBe(0);
  });
});
