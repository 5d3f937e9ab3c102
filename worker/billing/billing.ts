import { and, desc, eq, inArray } from "drizzle-orm";
import type { RequestContext } from "../context";
import type { Database } from "../db/client";
import { billingCustomers, invoices, subscriptions, type User } from "../db/schema";
import { conflict, forbidden } from "../errors";
import { currentEntitlement, effectiveSubscription, mayRun } from "./entitlement";
import { planById, type Plan } from "./plans";
import { stripeFor } from "./stripe-client";

// A subscription in one of these states still counts: the account may not start a second one.
export const LIVE_STATUSES = ["active", "trialing", "past_due", "unpaid", "paused"];

/** The Stripe customer of an account, created once (Stripe's idempotency key covers concurrent first calls). */
async function customerFor(ctx: RequestContext, user: User): Promise<string> {
  const [existing] = await ctx.db.select().from(billingCustomers).where(eq(billingCustomers.userId, user.id));
  if (existing) return existing.stripeCustomerId;
  const customer = await stripeFor(ctx.config).customers.create(
    { email: user.email, metadata: { user_id: user.id } },
    { idempotencyKey: `berth-customer-${user.id}` },
  );
  await ctx.db.insert(billingCustomers).values({ userId: user.id, stripeCustomerId: customer.id, createdAt: ctx.now }).onConflictDoNothing();
  return customer.id;
}

/** A Stripe Checkout session for `plan`: only for verified accounts without a live subscription. */
export async function startCheckout(ctx: RequestContext, user: User, plan: Plan): Promise<string> {
  if (!user.emailVerifiedAt) {
    throw forbidden("email_unverified", "Verify your email address before subscribing: we sent you a link.");
  }
  const [live] = await ctx.db
    .select({ id: subscriptions.id })
    .from(subscriptions)
    .where(and(eq(subscriptions.userId, user.id), inArray(subscriptions.status, LIVE_STATUSES)))
    .limit(1);
  if (live) {
    throw conflict("already_subscribed", "You already have a subscription. Change or cancel it from the billing portal.");
  }
  const customer = await customerFor(ctx, user);
  const session = await stripeFor(ctx.config).checkout.sessions.create({
    mode: "subscription",
    customer,
    client_reference_id: user.id,
    line_items: [{ price: plan.stripePriceId, quantity: 1 }],
    success_url: ctx.link("/billing/success?session_id={CHECKOUT_SESSION_ID}"),
    cancel_url: ctx.link("/billing/cancel"),
    metadata: { user_id: user.id, plan: plan.id },
    subscription_data: { metadata: { user_id: user.id, plan: plan.id } },
  });
  if (!session.url) throw new Error("Stripe returned a checkout session without a URL");
  return session.url;
}

/** The Stripe Customer Portal (change plan, update card, cancel, invoices). */
export async function openPortal(ctx: RequestContext, user: User): Promise<string> {
  const [customer] = await ctx.db.select().from(billingCustomers).where(eq(billingCustomers.userId, user.id));
  if (!customer) throw conflict("no_billing_account", "Subscribe to a plan first.");
  const session = await stripeFor(ctx.config).billingPortal.sessions.create({
    customer: customer.stripeCustomerId,
    return_url: ctx.link("/billing"),
  });
  return session.url;
}

export async function billingSummary(db: Database, userId: string) {
  const rows = await db.select().from(subscriptions).where(eq(subscriptions.userId, userId));
  const subscription = effectiveSubscription(rows);
  const entitlement = await currentEntitlement(db, userId);
  return { subscription, plan: subscription ? planById(subscription.planId) : undefined, entitlement, mayRun: mayRun(entitlement.state) };
}

export async function listInvoices(db: Database, userId: string) {
  return db.select().from(invoices).where(eq(invoices.userId, userId)).orderBy(desc(invoices.createdAt));
}
