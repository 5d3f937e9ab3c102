import { Hono } from "hono";
import { z } from "zod";
import { billingSummary, listInvoices, openPortal, startCheckout } from "../billing/billing";
import { PLAN_IDS, PLANS, planById } from "../billing/plans";
import type { AppEnv } from "../http/context";
import { billingContext } from "../http/domain-context";
import { presentInvoice, presentPlan, presentSubscription } from "../http/present";
import { requireAuth } from "../http/session";
import { readJson } from "../http/validation";

export const billingRoutes = new Hono<AppEnv>()
  .get("/plans", (c) => c.json({ plans: PLANS.map(presentPlan) }))
  .post("/checkout", async (c) => {
    const { user } = requireAuth(c);
    const { plan } = await readJson(c, z.strictObject({ plan: z.enum(PLAN_IDS, `must be one of: ${PLAN_IDS.join(", ")}`) }));
    return c.json({ url: await startCheckout(billingContext(c), user, planById(plan)!) });
  })
  .post("/portal", async (c) => {
    const { user } = requireAuth(c);
    return c.json({ url: await openPortal(billingContext(c), user) });
  })
  .get("/subscription", async (c) => {
    const { user } = requireAuth(c);
    return c.json(presentSubscription(await billingSummary(c.var.db, user.id)));
  })
  .get("/invoices", async (c) => {
    const { user } = requireAuth(c);
    return c.json({ invoices: (await listInvoices(c.var.db, user.id)).map(presentInvoice) });
  });
