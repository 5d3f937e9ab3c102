import { eq } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import type Stripe from "stripe";
import type { RequestContext } from "../context";
import type { Database } from "../db/client";
import { billingCustomers, invoices, stripeEvents, subscriptions, users } from "../db/schema";
import { mailerFor } from "../mail/mailer";
import { templates } from "../mail/templates";
import { decideEntitlement, effectiveSubscription, storedEntitlement, transitionStatements } from "./entitlement";
import { planByPriceId } from "./plans";
import { stripeFor } from "./stripe-client";

export type WebhookOutcome = "processed" | "duplicate" | "ignored";

type Statement = BatchItem<"sqlite">;

const seconds = (value: number | null | undefined) => (value ? new Date(value * 1000) : null);
const idOf = (value: string | { id: string } | null | undefined) => (typeof value === "string" ? value : (value?.id ?? null));

async function userForCustomer(db: Database, customerId: string | null) {
  if (!customerId) return null;
  const [row] = await db
    .select({ userId: billingCustomers.userId, email: users.email })
    .from(billingCustomers)
    .innerJoin(users, eq(users.id, billingCustomers.userId))
    .where(eq(billingCustomers.stripeCustomerId, customerId));
  return row ?? null;
}

/**
 * Mirrors one subscription as Stripe has it NOW (fetched, not taken from the
 * event), so events that arrive late or out of order can never roll state back;
 * and computes what that does to the account's entitlement.
 */
async function syncSubscription(ctx: RequestContext, subscriptionId: string): Promise<Statement[]> {
  const subscription = await stripeFor(ctx.config).subscriptions.retrieve(subscriptionId);
  const owner = await userForCustomer(ctx.db, idOf(subscription.customer));
  if (!owner) return [];
  const item = subscription.items.data[0];
  const row = {
    id: subscription.id,
    userId: owner.userId,
    stripeCustomerId: idOf(subscription.customer)!,
    planId: (item && planByPriceId(item.price.id)?.id) ?? "unknown",
    status: subscription.status,
    currentPeriodEnd: seconds(item?.current_period_end),
    cancelAtPeriodEnd: subscription.cancel_at_period_end,
    canceledAt: seconds(subscription.canceled_at),
    createdAt: seconds(subscription.created)!,
    updatedAt: ctx.now,
  };
  const others = await ctx.db.select().from(subscriptions).where(eq(subscriptions.userId, owner.userId));
  const effective = effectiveSubscription([...others.filter((other) => other.id !== row.id), row]);
  const transition = decideEntitlement(await storedEntitlement(ctx.db, owner.userId), effective?.status ?? null, ctx.now, ctx.config.entitlement);
  const { id: _id, createdAt: _createdAt, ...changes } = row;
  return [
    ctx.db.insert(subscriptions).values(row).onConflictDoUpdate({ target: subscriptions.id, set: changes }),
    ...(transition ? transitionStatements(ctx.db, owner.userId, transition, ctx.now) : []),
  ];
}

/** Mirrors one invoice as Stripe has it now: amounts, status, period and links. Nothing about the card. */
async function syncInvoice(ctx: RequestContext, invoiceId: string) {
  const invoice = await stripeFor(ctx.config).invoices.retrieve(invoiceId);
  const customerId = idOf(invoice.customer);
  const owner = await userForCustomer(ctx.db, customerId);
  const subscriptionId = idOf(invoice.parent?.subscription_details?.subscription);
  // The service period is the line's; the invoice's own period_* describe when it was drawn up.
  const period = invoice.lines.data[0]?.period ?? { start: invoice.period_start, end: invoice.period_end };
  const row = {
    id: invoice.id!,
    userId: owner?.userId ?? null,
    stripeCustomerId: customerId ?? "",
    subscriptionId,
    number: invoice.number,
    status: invoice.status ?? "draft",
    amountDue: invoice.amount_due,
    amountPaid: invoice.amount_paid,
    currency: invoice.currency,
    periodStart: seconds(period.start)!,
    periodEnd: seconds(period.end)!,
    hostedInvoiceUrl: invoice.hosted_invoice_url ?? null,
    invoicePdf: invoice.invoice_pdf ?? null,
    createdAt: seconds(invoice.created)!,
    updatedAt: ctx.now,
  };
  const { id: _id, createdAt: _createdAt, ...changes } = row;
  return {
    owner,
    subscriptionId,
    statements: owner ? [ctx.db.insert(invoices).values(row).onConflictDoUpdate({ target: invoices.id, set: changes })] : [],
  };
}

/** The account a Stripe event is about (its customer's), or null. */
export async function accountOfEvent(db: Database, event: Stripe.Event): Promise<string | null> {
  const customer = (event.data.object as { customer?: string | { id: string } | null }).customer;
  return (await userForCustomer(db, idOf(customer)))?.userId ?? null;
}

/**
 * Applies one verified Stripe event, once. Its effects and its id are stored in
 * one D1 batch (a transaction), so a duplicate finds the id and changes nothing.
 */
export async function handleStripeEvent(ctx: RequestContext, event: Stripe.Event): Promise<WebhookOutcome> {
  const [seen] = await ctx.db.select({ id: stripeEvents.id }).from(stripeEvents).where(eq(stripeEvents.id, event.id));
  if (seen) return "duplicate";

  const statements: Statement[] = [];
  let notifyPaymentFailed: { email: string } | null = null;
  let outcome: WebhookOutcome = "processed";
  switch (event.type) {
    case "checkout.session.completed": {
      const subscriptionId = idOf(event.data.object.subscription);
      if (subscriptionId) statements.push(...(await syncSubscription(ctx, subscriptionId)));
      break;
    }
    case "customer.subscription.created":
    case "customer.subscription.updated":
    case "customer.subscription.deleted":
      statements.push(...(await syncSubscription(ctx, event.data.object.id)));
      break;
    case "invoice.paid":
    case "invoice.payment_failed":
    case "invoice.finalized": {
      const invoice = await syncInvoice(ctx, event.data.object.id!);
      statements.push(...invoice.statements);
      if (invoice.subscriptionId) statements.push(...(await syncSubscription(ctx, invoice.subscriptionId)));
      if (event.type === "invoice.payment_failed" && invoice.owner) notifyPaymentFailed = invoice.owner;
      break;
    }
    default:
      outcome = "ignored";
  }

  const record = ctx.db
    .insert(stripeEvents)
    .values({ id: event.id, type: event.type, receivedAt: ctx.now })
    .onConflictDoNothing()
    .returning({ id: stripeEvents.id });
  const results = await ctx.db.batch([record, ...statements]);
  // A concurrent delivery of the same event got there first: its state writes were the same
  // (both mirror Stripe now) and the entitlement event is written once (see transitionStatements).
  if (results[0].length === 0) return "duplicate";

  if (notifyPaymentFailed) {
    try {
      await mailerFor(ctx).send(templates.paymentFailed(notifyPaymentFailed.email, ctx.link("/billing")));
    } catch (error) {
      // Forget the event so Stripe's retry sends the email; re-applying the state is harmless.
      await ctx.db.delete(stripeEvents).where(eq(stripeEvents.id, event.id));
      throw error;
    }
  }
  return outcome;
}
