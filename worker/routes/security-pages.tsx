import { Hono } from "hono";
import { notFound } from "../errors";
import type { AppEnv } from "../http/context";
import { HowWeKeepItPage, SecurityPage } from "../pages/security";
import { HOW_TOPICS } from "../pages/security-statements";
import { listServers, matrixServerNameOf } from "../servers/servers";

// The public security page and its "how we keep it" pages: for everyone, logged in or not.

export const securityPageRoutes = new Hono<AppEnv>()
  .get("/", async (c) => {
    const { ctx } = c.var;
    const viewer = c.var.auth?.user ?? null;
    const servers = viewer
      ? (await listServers(ctx.db, viewer.id)).map((server) => ({
          id: server.id,
          serverName: matrixServerNameOf(ctx.config, server),
          customServerName: server.serverName !== null,
        }))
      : null;
    return c.html(<SecurityPage viewer={viewer} servers={servers} />);
  })
  .get("/how/:topic", (c) => {
    const topic = HOW_TOPICS.find((candidate) => candidate === c.req.param("topic"));
    if (!topic) throw notFound("There is nothing at this address.");
    return c.html(<HowWeKeepItPage viewer={c.var.auth?.user ?? null} topic={topic} />);
  });
