// What happens in "Stripe": customers, Checkout, subscriptions, invoices and
// the events each change emits. Every operation validates before it changes
// anything, so a failed call leaves no trace and emits nothing.
import { checkCard, type CardInput } from "./cards.ts";
import { invalidRequest, noSuch } from "./errors.ts";
import type { Emitter } from "./events.ts";
import { newId } from "./ids.ts";
import {
  chargeObject,
  checkoutSessionObject,
  customerObject,
  invoiceLineObject,
  invoiceObject,
  paymentMethodObject,
  planObject,
  portalSessionObject,
  previousAttributes,
  snapshot,
  subscriptionItemObject,
  subscriptionObject,
  type CheckoutSession,
  type Customer,
  type Invoice,
  type Metadata,
  type PortalSession,
  type Subscription,
} from "./objects.ts";
import type { CheckoutRecord, Store } from "./store.ts";
import { addMonths, DAY_SECONDS, nextPeriodEnd, nowSeconds } from "./time.ts";

export interface Context {
  store: Store;
  emitter: Emitter;
  /** Where browsers reach the emulator (hosted pages, invoice links). */
  publicUrl: string;
}

// Lookups, failing as Stripe does (404 for ids in the path, 400 when `param` names a parameter).

export function getCustomer(store: Store, id: string, param?: string): Customer {
  const customer = store.customers.get(id);
  if (!customer) throw noSuch("customer", id, param);
  return customer;
}

export function getCheckoutRecord(store: Store, id: string): CheckoutRecord {
  const record = store.checkoutSessions.get(id);
  if (!record) throw noSuch("checkout.session", id);
  return record;
}

export function getSubscription(store: Store, id: string): Subscription {
  const subscription = store.subscriptions.get(id);
  if (!subscription) throw noSuch("subscription", id);
  return subscription;
}

export function getInvoice(store: Store, id: string): Invoice {
  const invoice = store.invoices.get(id);
  if (!invoice) throw noSuch("invoice", id);
  return invoice;
}

export function getPortalSession(store: Store, id: string): PortalSession {
  const session = store.portalSessions.get(id);
  if (!session) throw noSuch("billing_portal.session", id);
  return session;
}

function getPrice(store: Store, id: string, param: string) {
  const price = store.prices.get(id);
  if (!price) throw noSuch("price", id, param);
  return price;
}

// Customers

export interface CustomerInput {
  email?: string;
  name?: string;
  description?: string;
  phone?: string;
  metadata: Metadata;
}

export function createCustomer(ctx: Context, input: CustomerInput): Customer {
  const customer = customerObject({
    id: newId("cus"),
    created: nowSeconds(),
    email: input.email || null,
    name: input.name || null,
    description: input.description || null,
    phone: input.phone || null,
    metadata: input.metadata,
  });
  ctx.store.customers.set(customer.id, customer);
  return customer;
}

export function updateCustomer(ctx: Context, id: string, input: Partial<CustomerInput>): Customer {
  const customer = getCustomer(ctx.store, id);
  if (input.email !== undefined) customer.email = input.email || null;
  if (input.name !== undefined) customer.name = input.name || null;
  if (input.description !== undefined) customer.description = input.description || null;
  if (input.phone !== undefined) customer.phone = input.phone || null;
  if (input.metadata !== undefined) customer.metadata = input.metadata;
  return customer;
}

// Checkout

export interface CheckoutInput {
  mode: string;
  customer?: string;
  customerEmail?: string;
  clientReferenceId?: string;
  lineItems: { price: string; quantity: number }[];
  successUrl: string;
  cancelUrl?: string;
  metadata: Metadata;
  subscriptionMetadata: Metadata;
}

export function createCheckoutSession(ctx: Context, input: CheckoutInput): CheckoutSession {
  if (input.mode !== "subscription") {
    throw invalidRequest(`The emulator supports only mode=subscription, not '${input.mode}'.`, "mode");
  }
  if (input.customer !== undefined) getCustomer(ctx.store, input.customer, "customer");
  if (input.lineItems.length !== 1) {
    throw invalidRequest("The emulator supports exactly one line item per Checkout Session.", "line_items");
  }
  const [line] = input.lineItems;
  const price = getPrice(ctx.store, line!.price, "line_items[0][price]");
  if (line!.quantity < 1) throw invalidRequest("Quantity must be at least 1.", "line_items[0][quantity]");
  const id = newId("cs_test");
  const session = checkoutSessionObject({
    id,
    created: nowSeconds(),
    url: `${ctx.publicUrl}/c/pay/${id}`,
    customer: input.customer ?? null,
    customerEmail: input.customer === undefined ? (input.customerEmail ?? null) : null,
    clientReferenceId: input.clientReferenceId ?? null,
    amount: price.unit_amount * line!.quantity,
    currency: price.currency,
    successUrl: input.successUrl,
    cancelUrl: input.cancelUrl ?? null,
    metadata: input.metadata,
  });
  ctx.store.checkoutSessions.set(id, {
    session,
    lineItems: [{ id: newId("li"), price: price.id, quantity: line!.quantity }],
    subscriptionMetadata: input.subscriptionMetadata,
  });
  return session;
}

function expire(ctx: Context, session: CheckoutSession): void {
  session.status = "expired";
  session.url = null;
  ctx.emitter.emit("checkout.session.expired", session);
}

/** An open session past its expires_at becomes expired when next looked at. */
export function refreshCheckoutSession(ctx: Context, record: CheckoutRecord): CheckoutSession {
  if (record.session.status === "open" && nowSeconds() >= record.session.expires_at) expire(ctx, record.session);
  return record.session;
}

export function expireCheckoutSession(ctx: Context, id: string): CheckoutSession {
  const session = refreshCheckoutSession(ctx, getCheckoutRecord(ctx.store, id));
  if (session.status !== "open") {
    throw invalidRequest(`Only Checkout Sessions with a status of 'open' can be expired; this one is '${session.status}'.`);
  }
  session.expires_at = nowSeconds();
  expire(ctx, session);
  return session;
}

export interface CheckoutResult {
  session: CheckoutSession;
  subscription: Subscription;
  invoice: Invoice;
  /** success_url with {CHECKOUT_SESSION_ID} filled in. */
  redirectUrl: string;
}

/**
 * Paying on the hosted Checkout page. Emits, in Stripe's order:
 * payment_method.attached, customer.subscription.created (incomplete),
 * invoice.created, invoice.finalized, charge.succeeded, invoice.paid,
 * customer.subscription.updated (→ active), checkout.session.completed.
 */
export function completeCheckout(ctx: Context, id: string, payment: { card: CardInput; name: string | null }): CheckoutResult {
  const { store, emitter } = ctx;
  const record = getCheckoutRecord(store, id);
  const session = refreshCheckoutSession(ctx, record);
  if (session.status !== "open") throw invalidRequest(`This Checkout Session is ${session.status} and can no longer be paid.`);
  const card = checkCard(payment.card);
  const line = record.lineItems[0]!;
  const price = getPrice(store, line.price, "line_items[0][price]");

  const now = nowSeconds();
  const customer =
    session.customer === null
      ? createCustomer(ctx, { email: session.customer_email ?? undefined, name: payment.name ?? undefined, metadata: {} })
      : getCustomer(store, session.customer);

  const paymentMethod = paymentMethodObject({ id: newId("pm"), created: now, customer: customer.id, card, email: customer.email, name: payment.name });
  store.paymentMethods.set(paymentMethod.id, paymentMethod);
  emitter.emit("payment_method.attached", paymentMethod);

  const subscriptionId = newId("sub");
  const invoiceId = newId("in");
  const item = subscriptionItemObject({
    id: newId("si"),
    created: now,
    subscription: subscriptionId,
    price,
    quantity: line.quantity,
    periodStart: now,
    periodEnd: addMonths(now, 1),
  });
  const subscription = subscriptionObject({
    id: subscriptionId,
    created: now,
    customer: customer.id,
    currency: price.currency,
    item,
    metadata: { ...record.subscriptionMetadata },
    defaultPaymentMethod: paymentMethod.id,
    latestInvoice: invoiceId,
    status: "incomplete",
  });
  store.subscriptions.set(subscription.id, subscription);
  emitter.emit("customer.subscription.created", subscription);
  const incomplete = snapshot(subscription);

  // A subscription's first invoice covers an instant (period_start = period_end);
  // the service period is on its line.
  const invoice = createInvoice(ctx, {
    id: invoiceId,
    customer,
    subscription,
    billingReason: "subscription_create",
    periodStart: now,
    periodEnd: now,
    servicePeriod: { start: item.current_period_start, end: item.current_period_end },
  });
  finalizeInvoice(ctx, invoice);

  const charge = chargeObject({
    id: newId("ch"),
    created: now,
    amount: invoice.amount_due,
    currency: invoice.currency,
    customer,
    paymentMethod,
    paymentIntent: newId("pi"),
    balanceTransaction: newId("txn"),
    description: "Subscription creation",
    receiptUrl: `${ctx.publicUrl}/i/${invoice.id}`,
  });
  store.charges.set(charge.id, charge);
  emitter.emit("charge.succeeded", charge);
  payInvoice(ctx, invoice);

  subscription.status = "active";
  emitter.emit("customer.subscription.updated", subscription, previousAttributes(incomplete, subscription));

  session.status = "complete";
  session.payment_status = "paid";
  session.customer = customer.id;
  session.subscription = subscription.id;
  session.invoice = invoice.id;
  session.url = null;
  session.collected_information = { business_name: null, individual_name: null, shipping_details: null };
  session.customer_details = {
    address: { city: null, country: card.country, line1: null, line2: null, postal_code: null, state: null },
    business_name: null,
    email: customer.email,
    individual_name: null,
    name: payment.name,
    phone: null,
    tax_exempt: "none",
    tax_ids: [],
  };
  emitter.emit("checkout.session.completed", session);

  const redirectUrl = session.success_url.replaceAll("{CHECKOUT_SESSION_ID}", session.id);
  return { session, subscription, invoice, redirectUrl };
}

// Invoices

function createInvoice(
  ctx: Context,
  input: {
    id?: string;
    customer: Customer;
    subscription: Subscription;
    billingReason: "subscription_create" | "subscription_cycle";
    periodStart: number;
    periodEnd: number;
    servicePeriod: { start: number; end: number };
  },
): Invoice {
  const id = input.id ?? newId("in");
  const line = invoiceLineObject({
    id: newId("il"),
    invoice: id,
    subscription: input.subscription.id,
    item: input.subscription.items.data[0]!,
    periodStart: input.servicePeriod.start,
    periodEnd: input.servicePeriod.end,
  });
  const invoice = invoiceObject({
    id,
    created: nowSeconds(),
    customer: input.customer,
    subscription: input.subscription,
    billingReason: input.billingReason,
    line,
    periodStart: input.periodStart,
    periodEnd: input.periodEnd,
  });
  ctx.store.invoices.set(id, invoice);
  ctx.emitter.emit("invoice.created", invoice);
  return invoice;
}

function finalizeInvoice(ctx: Context, invoice: Invoice): void {
  const now = nowSeconds();
  invoice.status = "open";
  invoice.number = ctx.store.nextInvoiceNumber();
  invoice.hosted_invoice_url = `${ctx.publicUrl}/i/${invoice.id}`;
  invoice.invoice_pdf = `${ctx.publicUrl}/i/${invoice.id}/pdf`;
  invoice.effective_at = now;
  invoice.ending_balance = 0;
  invoice.status_transitions.finalized_at = now;
  ctx.emitter.emit("invoice.finalized", invoice);
}

function payInvoice(ctx: Context, invoice: Invoice): void {
  invoice.status = "paid";
  invoice.amount_paid = invoice.amount_due;
  invoice.amount_remaining = 0;
  invoice.attempted = true;
  invoice.attempt_count += 1;
  invoice.auto_advance = false;
  invoice.next_payment_attempt = null;
  invoice.status_transitions.paid_at = nowSeconds();
  ctx.emitter.emit("invoice.paid", invoice);
}

function failInvoicePayment(ctx: Context, invoice: Invoice): void {
  const now = nowSeconds();
  invoice.attempted = true;
  invoice.attempt_count += 1;
  // Smart Retries would try again in a few days.
  invoice.next_payment_attempt = now + 3 * DAY_SECONDS;
  ctx.emitter.emit("invoice.payment_failed", invoice);
}

/** The subscription's latest invoice when it is still open (a failed renewal). */
function openInvoiceOf(store: Store, subscription: Subscription): Invoice | undefined {
  const invoice = subscription.latest_invoice === null ? undefined : store.invoices.get(subscription.latest_invoice);
  return invoice?.status === "open" ? invoice : undefined;
}

/**
 * A new billing period: the item's period moves on by a month and its invoice
 * is created and finalized. As in Stripe, a cycle invoice's own period looks
 * back on the period that ended; its line carries the new one.
 */
function startCycle(ctx: Context, subscription: Subscription): Invoice {
  const item = subscription.items.data[0]!;
  const ended = { start: item.current_period_start, end: item.current_period_end };
  item.current_period_start = ended.end;
  item.current_period_end = nextPeriodEnd(subscription.billing_cycle_anchor, ended.end);
  const invoice = createInvoice(ctx, {
    customer: getCustomer(ctx.store, subscription.customer),
    subscription,
    billingReason: "subscription_cycle",
    periodStart: ended.start,
    periodEnd: ended.end,
    servicePeriod: { start: item.current_period_start, end: item.current_period_end },
  });
  finalizeInvoice(ctx, invoice);
  subscription.latest_invoice = invoice.id;
  return invoice;
}

// Subscriptions

export interface SubscriptionChanges {
  cancelAtPeriodEnd?: boolean;
  /** A new price for an existing item (a plan change). */
  itemPrice?: { item: string; price: string };
  metadata?: Metadata;
}

function emitUpdated(ctx: Context, before: Subscription, after: Subscription): void {
  const changed = previousAttributes(before, after);
  if (Object.keys(changed).length > 0) ctx.emitter.emit("customer.subscription.updated", after, changed);
}

export function updateSubscription(ctx: Context, id: string, changes: SubscriptionChanges): Subscription {
  const subscription = getSubscription(ctx.store, id);
  if (subscription.status === "canceled" && (changes.cancelAtPeriodEnd !== undefined || changes.itemPrice !== undefined)) {
    throw invalidRequest("A canceled subscription can only update its cancellation_details and metadata.");
  }
  const item = changes.itemPrice && subscription.items.data.find((candidate) => candidate.id === changes.itemPrice!.item);
  if (changes.itemPrice && !item) throw noSuch("subscription item", changes.itemPrice.item, "items[0][id]");
  const price = changes.itemPrice && getPrice(ctx.store, changes.itemPrice.price, "items[0][price]");

  const before = snapshot(subscription);
  const now = nowSeconds();
  if (changes.cancelAtPeriodEnd === true && !subscription.cancel_at_period_end) {
    subscription.cancel_at_period_end = true;
    subscription.cancel_at = subscription.items.data[0]!.current_period_end;
    subscription.canceled_at = now;
    subscription.cancellation_details.reason = "cancellation_requested";
  } else if (changes.cancelAtPeriodEnd === false && subscription.cancel_at_period_end) {
    subscription.cancel_at_period_end = false;
    subscription.cancel_at = null;
    subscription.canceled_at = null;
    subscription.cancellation_details.reason = null;
  }
  if (item && price && item.price.id !== price.id) {
    item.price = price;
    item.plan = planObject(price);
  }
  if (changes.metadata !== undefined) subscription.metadata = changes.metadata;
  emitUpdated(ctx, before, subscription);
  return subscription;
}

/** Cancels now: status canceled, customer.subscription.deleted. */
export function cancelSubscription(ctx: Context, id: string): Subscription {
  const subscription = getSubscription(ctx.store, id);
  if (subscription.status === "canceled") throw invalidRequest(`The subscription ${id} has already been canceled.`);
  endSubscription(ctx, subscription);
  return subscription;
}

function endSubscription(ctx: Context, subscription: Subscription): void {
  const now = nowSeconds();
  subscription.status = "canceled";
  subscription.ended_at = now;
  subscription.canceled_at ??= now;
  subscription.cancellation_details.reason ??= "cancellation_requested";
  ctx.emitter.emit("customer.subscription.deleted", subscription);
}

function requireBillable(subscription: Subscription): void {
  if (subscription.status === "canceled" || subscription.status === "incomplete" || subscription.status === "incomplete_expired") {
    throw invalidRequest(`Subscription ${subscription.id} is ${subscription.status}; only a started, uncanceled subscription can be billed.`);
  }
}

export interface BillingResult {
  subscription: Subscription;
  invoice: Invoice | null;
}

/**
 * A renewal whose payment fails: a new period with an open invoice
 * (invoice.created, invoice.finalized, invoice.payment_failed) and the
 * subscription past_due (customer.subscription.updated). If the latest invoice
 * is already open, this is a further failed attempt on it.
 */
export function failPayment(ctx: Context, id: string): BillingResult {
  const subscription = getSubscription(ctx.store, id);
  requireBillable(subscription);
  const before = snapshot(subscription);
  const invoice = openInvoiceOf(ctx.store, subscription) ?? startCycle(ctx, subscription);
  failInvoicePayment(ctx, invoice);
  if (subscription.status === "active" || subscription.status === "trialing") subscription.status = "past_due";
  emitUpdated(ctx, before, subscription);
  return { subscription, invoice };
}

/**
 * The period ends and is paid: a new period, its invoice paid (invoice.created,
 * invoice.finalized, invoice.paid), the subscription active
 * (customer.subscription.updated). A subscription with an open invoice (after
 * fail-payment) pays that one instead; one set to cancel at period end is
 * canceled (customer.subscription.deleted).
 */
export function renew(ctx: Context, id: string): BillingResult {
  const subscription = getSubscription(ctx.store, id);
  requireBillable(subscription);
  if (subscription.cancel_at_period_end) {
    endSubscription(ctx, subscription);
    return { subscription, invoice: null };
  }
  const before = snapshot(subscription);
  const invoice = openInvoiceOf(ctx.store, subscription) ?? startCycle(ctx, subscription);
  payInvoice(ctx, invoice);
  subscription.status = "active";
  emitUpdated(ctx, before, subscription);
  return { subscription, invoice };
}

/** Retries exhausted: the subscription turns unpaid (customer.subscription.updated). */
export function markUnpaid(ctx: Context, id: string): Subscription {
  const subscription = getSubscription(ctx.store, id);
  requireBillable(subscription);
  const before = snapshot(subscription);
  subscription.status = "unpaid";
  emitUpdated(ctx, before, subscription);
  return subscription;
}

// Customer Portal

export function createPortalSession(ctx: Context, input: { customer: string; returnUrl?: string }): PortalSession {
  getCustomer(ctx.store, input.customer, "customer");
  const id = newId("bps");
  const session = portalSessionObject({
    id,
    created: nowSeconds(),
    customer: input.customer,
    configuration: ctx.store.portalConfiguration,
    returnUrl: input.returnUrl ?? null,
    url: `${ctx.publicUrl}/p/session/${id}`,
  });
  ctx.store.portalSessions.set(id, session);
  return session;
}
