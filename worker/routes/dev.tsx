import { Hono } from "hono";
import { createJoinToken } from "../fleet/enrollment";
import type { AppEnv } from "../http/context";
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
  .get("/mailbox", async (c) => c.html(<MailboxPage messages={await readOutbox(c.var.ctx.db, c.req.query("to"))} viewer={c.var.auth?.user ?? null} />));
