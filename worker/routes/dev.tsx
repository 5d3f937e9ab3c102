import { Hono } from "hono";
import { z } from "zod";
import { gatewayTimeout, conflict } from "../errors";
import { createJoinToken } from "../fleet/enrollment";
import { hostStub } from "../fleet/hosts";
import type { AppEnv } from "../http/context";
import { parseWith } from "../http/validation";
import { readOutbox } from "../mail/mailer";
import { MailboxPage } from "../pages/mailbox";

// Mounted only in development (see app.tsx): the local outbox of every email sent.
export const devRoutes = new Hono<AppEnv>()
  .get("/mailbox.json", async (c) => c.json(await readOutbox(c.var.ctx.db, c.req.query("to"))))
  // `npm run dev` enrolls its local agent with this; in production hosts need an operator's token.
  .post("/join-token", async (c) => {
    const { token, region, expiresAt } = await createJoinToken(c.var.ctx.db, "dev", "us-east", 10, c.var.ctx.now);
    return c.json({ token, region, expiresAt: expiresAt.toISOString() }, 201);
  })
  // The dispatch benchmark's baseline: the transport of a job (this request, the host's Durable
  // Object, one message over the agent's WebSocket and its answer) without reading or writing D1.
  .post("/hosts/:id/echo", async (c) => {
    const { id } = parseWith(z.object({ id: z.string().min(1).max(128) }), c.req.param());
    const echo = await hostStub(c.var.ctx.env, id).echo();
    if (echo.outcome === "not connected") throw conflict("host_not_connected", "This host's agent is not connected.");
    if (echo.outcome === "timeout") throw gatewayTimeout("agent_timeout", "The host's agent did not answer the echo in time.");
    // Its id, so a caller with many echoes in flight can tell which one its agent saw.
    return c.json({ id: echo.id });
  })
  .get("/mailbox", async (c) => c.html(<MailboxPage messages={await readOutbox(c.var.ctx.db, c.req.query("to"))} viewer={c.var.auth?.user ?? null} />));
