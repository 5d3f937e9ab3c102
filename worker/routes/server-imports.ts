import { Hono } from "hono";
import { z } from "zod";
import { sha256Hex } from "../../protocol/messages";
import { openImportArchive } from "../imports/import-job";
import { cancelServerImport, completeServerImport, importProgress, latestServerImport, receiveImportPart, startServerImport } from "../imports/imports";
import { agentUploadContext, partLength, partNumberParam, signedAgentRequest, type AgentAppEnv } from "../http/agent-signature";
import type { AppEnv } from "../http/context";
import { presentServerImport } from "../http/present";
import { requireSession } from "../http/session";
import { parseWith, readJson } from "../http/validation";
import type { WorkContext } from "../context";
import type { ServerImport } from "../db/schema";
import { notFound } from "../errors";
import { ownedServer } from "../servers/servers";

const id = z.string().min(1).max(128);
const serverParam = z.object({ id });
const partParams = serverParam.extend({ partNumber: partNumberParam });
const importRequest = z.strictObject({ sizeBytes: z.number().int().positive().max(Number.MAX_SAFE_INTEGER) });
/** Typed for a Berth export (it was encrypted with it); none for a plain Synapse archive. */
const completeRequest = z.strictObject({ passphrase: z.string().min(1).max(1024).optional() });
const partDigest = z.object({ "x-part-sha256": sha256Hex.optional() });

async function present(ctx: WorkContext, row: ServerImport) {
  const { received, job } = await importProgress(ctx.db, row);
  return presentServerImport(row, received, job);
}

// "Import a homeserver" into its owner's waiting homeserver (mounted under /api/servers): the
// archive in parts, resumably, then completed; or cancelled.
export const serverImportRoutes = new Hono<AppEnv>()
  .get("/:id/import", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const server = await ownedServer(ctx.db, user.id, parseWith(serverParam, c.req.param()).id);
    const row = await latestServerImport(ctx.db, server.id);
    if (!row) throw notFound("Nothing was imported into this homeserver.");
    return c.json(await present(ctx, row));
  })
  .post("/:id/import", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { sizeBytes } = await readJson(c, importRequest);
    const row = await startServerImport(ctx, user, parseWith(serverParam, c.req.param()).id, sizeBytes);
    return c.json(await present(ctx, row), 201);
  })
  .put("/:id/import/parts/:partNumber", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { id: serverId, partNumber } = parseWith(partParams, c.req.param());
    const { "x-part-sha256": sha256 } = parseWith(partDigest, { "x-part-sha256": c.req.header("x-part-sha256") });
    return c.json(await receiveImportPart(ctx, user, serverId, { partNumber, body: c.req.raw.body, size: partLength(c), sha256 }));
  })
  .post("/:id/import/complete", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { passphrase } = await readJson(c, completeRequest);
    const row = await completeServerImport(ctx, user, parseWith(serverParam, c.req.param()).id, passphrase);
    return c.json(await present(ctx, row));
  })
  .delete("/:id/import", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const row = await cancelServerImport(ctx, user, parseWith(serverParam, c.req.param()).id);
    return c.json(await present(ctx, row));
  });

const agentImportParam = z.object({ importId: id });

// Agents only, signed by their host (mounted under /api/agent/imports): the archive, for the host making the homeserver from it.
export const agentImportRoutes = new Hono<AgentAppEnv>().get("/:importId/archive", signedAgentRequest(), async (c) => {
  const object = await openImportArchive(agentUploadContext(c), parseWith(agentImportParam, c.req.param()).importId);
  return c.body(object.body, 200, { "content-type": "application/octet-stream", "content-length": String(object.size), etag: object.httpEtag });
});
