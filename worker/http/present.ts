import type { billingSummary } from "../billing/billing";
import type { Plan } from "../billing/plans";
import type { Invoice, User } from "../db/schema";

/** The account as its owner sees it through the API. */
export function publicUser(user: User) {
  return {
    id: user.id,
    email: user.email,
    emailVerified: user.emailVerifiedAt !== null,
    emailVerifiedAt: user.emailVerifiedAt?.toISOString() ?? null,
    createdAt: user.createdAt.toISOString(),
  };
}

export function presentPlan(plan: Plan) {
  return {
    id: plan.id,
    name: plan.name,
    monthlyPrice: plan.monthlyPrice,
    currency: plan.currency,
    resources: plan.resources,
  };
}

/** The account's subscription and what it may run; `status` is "none" without a subscription. */
export function presentSubscription(summary: Awaited<ReturnType<typeof billingSummary>>) {
  const { subscription, entitlement } = summary;
  return {
    status: subscription?.status ?? "none",
    plan: subscription?.planId ?? null,
    currentPeriodEnd: subscription?.currentPeriodEnd?.toISOString() ?? null,
    cancelAtPeriodEnd: subscription?.cancelAtPeriodEnd ?? false,
    entitlement: {
      state: entitlement.state,
      mayRun: summary.mayRun,
      since: entitlement.state === "none" ? null : entitlement.since.toISOString(),
      until: entitlement.until?.toISOString() ?? null,
    },
  };
}

export function presentInvoice(invoice: Invoice) {
  return {
    id: invoice.id,
    number: invoice.number,
    status: invoice.status,
    amountDue: invoice.amountDue,
    amountPaid: invoice.amountPaid,
    currency: invoice.currency,
    periodStart: invoice.periodStart.toISOString(),
    periodEnd: invoice.periodEnd.toISOString(),
    hostedInvoiceUrl: invoice.hostedInvoiceUrl,
    invoicePdf: invoice.invoicePdf,
    createdAt: invoice.createdAt.toISOString(),
  };
}
