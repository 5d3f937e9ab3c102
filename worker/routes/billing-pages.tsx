import { Hono } from "hono";
import { z } from "zod";
import { billingSummary, listInvoices, openPortal, startCheckout } from "../billing/billing";
import { PLAN_IDS, PLANS, planById } from "../billing/plans";
import type { AppEnv } from "../http/context";
import { handleForm, submitForm } from "../http/forms";
import { requireLogin } from "../http/session";
import { presentSubscription } from "../http/present";
import { parseWith } from "../http/validation";
import { BillingPage } from "../pages/billing";
import { MessagePage } from "../pages/auth";
import type { RequestContext } from "../context";
import type { User } from "../db/schema";

async function renderBilling(ctx: RequestContext, user: User, error?: string) {
  const summary = await billingSummary(ctx.db, user.id);
  return (
    <BillingPage
      user={user}
      subscription={presentSubscription(summary)}
      plan={summary.plan}
      plans={PLANS}
      invoices={await listInvoices(ctx.db, user.id)}
      error={error}
    />
  );
}

// The billing pages; Stripe's own pages (Checkout, the Customer Portal) take the card.
export const billingPageRoutes = new Hono<AppEnv>()
  .use(requireLogin)
  .get("/", async (c) => c.html(await renderBilling(c.var.ctx, c.var.user)))
  .post("/checkout", async (c) => {
    const { user } = c.var;
    return submitForm(
      c,
      async (fields) => {
        const { plan } = parseWith(z.object({ plan: z.enum(PLAN_IDS, "choose one of the plans") }), fields);
        return c.redirect(await startCheckout(c.var.ctx, user, planById(plan)!), 303);
      },
      (error) => renderBilling(c.var.ctx, user, error),
    );
  })
  .post("/portal", async (c) => {
    const { user } = c.var;
    return handleForm(
      c,
      async () => c.redirect(await openPortal(c.var.ctx, user), 303),
      (error) => renderBilling(c.var.ctx, user, error),
    );
  })
  .get("/success", (c) =>
    c.html(
      <MessagePage
        title="Thank you"
        message="Your payment went through. Your plan shows on the billing page as soon as Stripe confirms it, usually within seconds."
        viewer={c.var.user}
        next={{ href: "/billing", label: "Go to billing" }}
      />,
    ),
  )
  .get("/cancel", (c) =>
    c.html(
      <MessagePage
        title="Checkout canceled"
        message="Nothing was charged. You can choose a plan whenever you like."
        viewer={c.var.user}
        next={{ href: "/billing", label: "Back to billing" }}
      />,
    ),
  );
