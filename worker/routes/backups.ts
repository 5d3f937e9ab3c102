import { Hono } from "hono";
import { z } from "zod";
import { backupAbortRequest, backupCompleteRequest } from "../../protocol/messages";
import { listBackups, requestBackup } from "../backups/backups";
import { newestSucceededBackupId } from "../backups/maintenance";
import { requestRestore } from "../backups/restore";
import { abortBackup, completeBackup, openBackupForRestore, receivePart } from "../backups/uploads";
import { agentUploadContext, partLength, partNumberParam, signedAgentRequest, type AgentAppEnv } from "../http/agent-signature";
import type { AppEnv } from "../http/context";
import { presentBackup, presentServer } from "../http/present";
import { requireSession } from "../http/session";
import { parseWith, readJson } from "../http/validation";
import { latestLifecycleJob, ownedServer } from "../servers/servers";

const id = z.string().min(1).max(128);
const serverParam = z.object({ id });
const backupParam = z.object({ backupId: id });

// A customer's backups of their own homeservers (mounted under /api/servers).
export const serverBackupRoutes = new Hono<AppEnv>()
  .get("/:id/backups", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const server = await ownedServer(ctx.db, user.id, parseWith(serverParam, c.req.param()).id);
    const newest = await newestSucceededBackupId(ctx.db, server.id);
    return c.json({ backups: (await listBackups(ctx.db, server.id)).map((backup) => presentBackup(backup, newest, ctx.now)) });
  })
  .post("/:id/backups", requireSession, async (c) => {
    const backup = await requestBackup(c.var.ctx, c.var.user, parseWith(serverParam, c.req.param()).id);
    return c.json(presentBackup(backup, undefined, c.var.ctx.now), 202);
  })
  .post("/:id/restore", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { backupId } = await readJson(c, z.strictObject({ backupId: id }));
    const serverId = parseWith(serverParam, c.req.param()).id;
    const server = await requestRestore(ctx, user, serverId, backupId);
    return c.json(presentServer(ctx.config, server, await latestLifecycleJob(ctx.db, server)), 202);
  });

const partParams = backupParam.extend({ partNumber: partNumberParam });

// Agents only, every request signed by its host (mounted under /api/agent/backups). There is no delete.
export const agentBackupRoutes = new Hono<AgentAppEnv>()
  .put("/:backupId/parts/:partNumber", signedAgentRequest({ streamedBody: true }), async (c) => {
    const { backupId, partNumber } = parseWith(partParams, c.req.param());
    const receipt = await receivePart(agentUploadContext(c), backupId, partNumber, c.req.raw.body, partLength(c), c.var.signedRequest.contentSha256);
    return c.json(receipt);
  })
  .post("/:backupId/complete", signedAgentRequest(), async (c) => {
    const { backupId } = parseWith(backupParam, c.req.param());
    const backup = await completeBackup(agentUploadContext(c), backupId, await readJson(c, backupCompleteRequest));
    return c.json({ backup: presentBackup(backup, undefined, c.var.ctx.now) });
  })
  .post("/:backupId/abort", signedAgentRequest(), async (c) => {
    const { backupId } = parseWith(backupParam, c.req.param());
    const { reason } = await readJson(c, backupAbortRequest);
    const backup = await abortBackup(agentUploadContext(c), backupId, reason);
    return c.json({ backup: presentBackup(backup, undefined, c.var.ctx.now) });
  })
  .get("/:backupId/object", signedAgentRequest(), async (c) => {
    const object = await openBackupForRestore(agentUploadContext(c), parseWith(backupParam, c.req.param()).backupId);
    return c.body(object.body, 200, { "content-type": "application/octet-stream", "content-length": String(object.size), etag: object.httpEtag });
  });
