import { Hono } from "hono";
import { z } from "zod";
import { backupAbortRequest, backupCompleteRequest } from "../../protocol/messages";
import { agentUploadContext, partLength, partNumberParam, signedAgentRequest, type AgentAppEnv } from "../http/agent-signature";
import type { AppEnv } from "../http/context";
import { requireOperator } from "../http/operator";
import { requireSession } from "../http/session";
import { parseWith, readJson } from "../http/validation";
import { LEGAL_EXPORT_FILES, legalExportById, listLegalExports, openLegalExportFile, presentLegalExport } from "../legal/exports";
import { legalExportUploads } from "../legal/uploads";
import { notFound } from "../errors";

const id = z.string().min(1).max(128);
const exportParam = z.object({ id });

// Operators only (mounted under /api/admin/legal-exports; they are asked for under /api/admin/servers/:id):
// the exports, each one's state, and its two files for handing over. There is no delete: retention removes the files.
export const adminLegalExportRoutes = new Hono<AppEnv>()
  .use(requireSession)
  .use(requireOperator)
  .get("/", async (c) => {
    const { serverId } = parseWith(z.object({ serverId: id.optional() }), c.req.query());
    return c.json({ legalExports: (await listLegalExports(c.var.ctx.db, serverId)).map(presentLegalExport) });
  })
  .get("/:id", async (c) => {
    const row = await legalExportById(c.var.ctx.db, parseWith(exportParam, c.req.param()).id);
    if (!row) throw notFound("No such legal export.");
    return c.json(presentLegalExport(row));
  })
  .get("/:id/files/:file", async (c) => {
    const { id: exportId, file } = parseWith(exportParam.extend({ file: z.enum(LEGAL_EXPORT_FILES) }), c.req.param());
    const object = await openLegalExportFile(c.var.ctx, c.var.user.id, exportId, file);
    return c.body(object.body, 200, {
      "content-type": "application/octet-stream",
      "content-length": String(object.size),
      "content-disposition": `attachment; filename="legal-export-${exportId}-${file}.age"`,
    });
  });

const partParams = exportParam.extend({ partNumber: partNumberParam });

// Agents only, every request signed by its host (mounted under /api/agent/legal-exports): the host's file, in parts.
export const agentLegalExportRoutes = new Hono<AgentAppEnv>()
  .put("/:id/parts/:partNumber", signedAgentRequest({ streamedBody: true }), async (c) => {
    const { id: exportId, partNumber } = parseWith(partParams, c.req.param());
    return c.json(
      await legalExportUploads.receivePart(agentUploadContext(c), exportId, partNumber, c.req.raw.body, partLength(c), c.var.signedRequest.contentSha256),
    );
  })
  .post("/:id/complete", signedAgentRequest(), async (c) => {
    const row = await legalExportUploads.complete(agentUploadContext(c), parseWith(exportParam, c.req.param()).id, await readJson(c, backupCompleteRequest));
    return c.json({ status: row.status, size: row.sizeBytes, sha256: row.sha256 });
  })
  .post("/:id/abort", signedAgentRequest(), async (c) => {
    const { reason } = await readJson(c, backupAbortRequest);
    const row = await legalExportUploads.abort(agentUploadContext(c), parseWith(exportParam, c.req.param()).id, reason);
    return c.json({ status: row.status });
  });
