import { Hono } from "hono";
import type { AppEnv } from "../http/context";
import { readOutbox } from "../mail/mailer";
import { MailboxPage } from "../pages/mailbox";

// Mounted only in development (see app.ts): the local outbox of every email sent.
export const devRoutes = new Hono<AppEnv>()
  .get("/mailbox.json", async (c) => c.json(await readOutbox(c.var.db, c.req.query("to"))))
  .get("/mailbox", async (c) =>
    c.html(<MailboxPage messages={await readOutbox(c.var.db, c.req.query("to"))} viewer={c.var.auth?.user ?? null} />),
  );
