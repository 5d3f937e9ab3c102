import { Hono } from "hono";
import { z } from "zod";
import { billingSummary, listInvoices, openPortal, startCheckout } from "../billing/billing";
import { PLAN_IDS, PLANS, planById } from "../billing/plans";
import type { AppEnv } from "../http/context";
import { presentInvoice, presentPlan, presentSubscription } from "../http/present";
import { requireSession } from "../http/session";
import { readJson } from "../http/validation";

export const billingRoutes = new Hono<AppEnv>()
  .get("/plans", (c) => c.json({ plans: PLANS.map(presentPlan) }))
  .post("/checkout", requireSession, async (c) => {
    const { plan } = await readJson(c, z.strictObject({ plan: z.enum(PLAN_IDS, `must be one of: ${PLAN_IDS.join(", ")}`) }));
    return c.json({ url: await startCheckout(c.var.ctx, c.var.user, planById(plan)!) });
  })
  .post("/portal", requireSession, async (c) => c.json({ url: await openPortal(c.var.ctx, c.var.user) }))
  .get("/subscription", requireSession, async (c) => c.json(presentSubscription(await billingSummary(c.var.ctx.db, c.var.user.id))))
  .get("/invoices", requireSession, async (c) => c.json({ invoices: (await listInvoices(c.var.ctx.db, c.var.user.id)).map(presentInvoice) }));
