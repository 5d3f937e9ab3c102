import { Hono } from "hono";
import { z } from "zod";
import { backupAbortRequest, backupCompleteRequest } from "../../protocol/messages";
import { listServerExports, openServerExport, requestServerExport } from "../exports/exports";
import { serverExportUploads } from "../exports/uploads";
import { agentUploadContext, partLength, partNumberParam, signedAgentRequest, type AgentAppEnv } from "../http/agent-signature";
import type { AppEnv } from "../http/context";
import { presentServerExport } from "../http/present";
import { requireSession } from "../http/session";
import { parseWith, readJson } from "../http/validation";
import { ownedServer } from "../servers/servers";

const id = z.string().min(1).max(128);
const serverParam = z.object({ id });
const exportParams = z.object({ id, exportId: id });
/** Its strength is judged by requireStrongPassphrase, whose refusal never repeats it (a schema's message might). */
const exportRequest = z.strictObject({ passphrase: z.string() });

// A customer's full exports of their own homeservers (mounted under /api/servers).
export const serverExportRoutes = new Hono<AppEnv>()
  .get("/:id/exports", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const server = await ownedServer(ctx.db, user.id, parseWith(serverParam, c.req.param()).id);
    const rows = await listServerExports(ctx.db, user.id, server.id);
    return c.json({ exports: rows.map(({ row, job }) => presentServerExport(row, job, ctx.now)) });
  })
  .post("/:id/exports", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const serverId = parseWith(serverParam, c.req.param()).id;
    const { passphrase } = await readJson(c, exportRequest);
    const row = await requestServerExport(ctx, user, serverId, passphrase);
    return c.json(presentServerExport(row, null, ctx.now), 202);
  })
  .get("/:id/exports/:exportId/download", requireSession, async (c) => {
    const { id: serverId, exportId } = parseWith(exportParams, c.req.param());
    const { fileName, object } = await openServerExport(c.var.ctx, c.var.user, serverId, exportId);
    return c.body(object.body, 200, {
      "content-type": "application/octet-stream",
      "content-length": String(object.size),
      "content-disposition": `attachment; filename="${fileName}"`,
    });
  });

const agentExportParam = z.object({ exportId: id });
const partParams = agentExportParam.extend({ partNumber: partNumberParam });

// Agents only, every request signed by its host (mounted under /api/agent/exports): the export's file, in parts.
export const agentServerExportRoutes = new Hono<AgentAppEnv>()
  .put("/:exportId/parts/:partNumber", signedAgentRequest({ streamedBody: true }), async (c) => {
    const { exportId, partNumber } = parseWith(partParams, c.req.param());
    return c.json(
      await serverExportUploads.receivePart(agentUploadContext(c), exportId, partNumber, c.req.raw.body, partLength(c), c.var.signedRequest.contentSha256),
    );
  })
  .post("/:exportId/complete", signedAgentRequest(), async (c) => {
    const { exportId } = parseWith(agentExportParam, c.req.param());
    const row = await serverExportUploads.complete(agentUploadContext(c), exportId, await readJson(c, backupCompleteRequest));
    return c.json({ status: row.status, size: row.sizeBytes, sha256: row.sha256 });
  })
  .post("/:exportId/abort", signedAgentRequest(), async (c) => {
    const { exportId } = parseWith(agentExportParam, c.req.param());
    const { reason } = await readJson(c, backupAbortRequest);
    const row = await serverExportUploads.abort(agentUploadContext(c), exportId, reason);
    return c.json({ status: row.status });
  });
