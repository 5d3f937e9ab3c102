// Builders for the API objects, in the shapes of API version 2026-10-28.endive
// (see the stripe package's resources/*.d.ts). Every non-optional field is
// present, keys in Stripe's order (id, object, then alphabetical), so payloads
// look like the real ones. Fields the emulator later changes are typed wide.
import type { Plan } from "../../worker/billing/plans.ts";

export const API_VERSION = "2026-10-28.endive";

export type Metadata = Record<string, string>;

export interface ApiList<T> {
  object: "list";
  data: T[];
  has_more: boolean;
  total_count?: number;
  url: string;
}

export function list<T>(data: T[], url: string, hasMore = false): ApiList<T> {
  return { object: "list", data, has_more: hasMore, url };
}

/** A deep copy, so an event keeps the object as it was when emitted. */
export function snapshot<T>(value: T): T {
  return structuredClone(value);
}

/** Top-level fields that changed, with their earlier values (an event's `previous_attributes`). */
export function previousAttributes(before: object, after: object): Record<string, unknown> {
  const previous: Record<string, unknown> = {};
  const old = before as Record<string, unknown>;
  const now = after as Record<string, unknown>;
  for (const key of Object.keys(old)) {
    if (JSON.stringify(old[key]) !== JSON.stringify(now[key])) previous[key] = old[key];
  }
  return previous;
}

export function customerObject(input: {
  id: string;
  created: number;
  email: string | null;
  name: string | null;
  description: string | null;
  phone: string | null;
  metadata: Metadata;
}) {
  return {
    id: input.id,
    object: "customer" as const,
    address: null,
    balance: 0,
    created: input.created,
    currency: null as string | null,
    customer_account: null,
    default_source: null,
    delinquent: false,
    description: input.description,
    discount: null,
    email: input.email,
    invoice_prefix: input.id.slice(4, 12).toUpperCase(),
    invoice_settings: {
      custom_fields: null,
      default_payment_method: null as string | null,
      footer: null,
      rendering_options: null,
    },
    livemode: false,
    metadata: input.metadata,
    name: input.name,
    next_invoice_sequence: 1,
    phone: input.phone,
    preferred_locales: [] as string[],
    shipping: null,
    tax_exempt: "none",
    test_clock: null,
  };
}
export type Customer = ReturnType<typeof customerObject>;

export function productObject(input: { id: string; created: number; plan: Plan }) {
  return {
    id: input.id,
    object: "product" as const,
    active: true,
    created: input.created,
    default_price: input.plan.stripePriceId,
    description: null,
    images: [] as string[],
    livemode: false,
    marketing_features: [] as { name?: string }[],
    metadata: {} as Metadata,
    name: `Berth ${input.plan.name}`,
    package_dimensions: null,
    shippable: null,
    statement_descriptor: null,
    tax_code: null,
    tax_details: null,
    type: "service",
    unit_label: null,
    updated: input.created,
    url: null,
  };
}
export type Product = ReturnType<typeof productObject>;

export function priceObject(input: { created: number; plan: Plan; product: string }) {
  return {
    id: input.plan.stripePriceId,
    object: "price" as const,
    active: true,
    billing_scheme: "per_unit",
    created: input.created,
    currency: input.plan.currency as string,
    custom_unit_amount: null,
    livemode: false,
    lookup_key: null,
    metadata: {} as Metadata,
    nickname: input.plan.name as string | null,
    product: input.product,
    recurring: {
      interval: "month",
      interval_count: 1,
      meter: null,
      trial_period_days: null,
      usage_type: "licensed",
    },
    tax_behavior: "unspecified",
    tiers_mode: null,
    transform_quantity: null,
    type: "recurring",
    unit_amount: input.plan.monthlyPrice,
    unit_amount_decimal: String(input.plan.monthlyPrice),
  };
}
export type Price = ReturnType<typeof priceObject>;

/** The legacy Plan object Stripe still nests in each subscription item, derived from its price. */
export function planObject(price: Price) {
  return {
    id: price.id,
    object: "plan" as const,
    active: price.active,
    amount: price.unit_amount,
    amount_decimal: price.unit_amount_decimal,
    billing_scheme: price.billing_scheme,
    created: price.created,
    currency: price.currency,
    interval: price.recurring.interval,
    interval_count: price.recurring.interval_count,
    livemode: false,
    metadata: {} as Metadata,
    meter: null,
    nickname: price.nickname,
    product: price.product,
    tiers_mode: null,
    transform_usage: null,
    trial_period_days: null,
    usage_type: price.recurring.usage_type,
  };
}

export function subscriptionItemObject(input: {
  id: string;
  created: number;
  subscription: string;
  price: Price;
  quantity: number;
  periodStart: number;
  periodEnd: number;
}) {
  return {
    id: input.id,
    object: "subscription_item" as const,
    billing_thresholds: null,
    created: input.created,
    current_period_end: input.periodEnd,
    current_period_start: input.periodStart,
    current_trial: null,
    discounts: [] as string[],
    metadata: {} as Metadata,
    plan: planObject(input.price),
    price: input.price,
    quantity: input.quantity,
    subscription: input.subscription,
    tax_rates: [] as unknown[],
  };
}
export type SubscriptionItem = ReturnType<typeof subscriptionItemObject>;

export type SubscriptionStatus = "incomplete" | "incomplete_expired" | "trialing" | "active" | "past_due" | "canceled" | "unpaid" | "paused";

export function subscriptionObject(input: {
  id: string;
  created: number;
  customer: string;
  currency: string;
  item: SubscriptionItem;
  metadata: Metadata;
  defaultPaymentMethod: string | null;
  latestInvoice: string | null;
  status: SubscriptionStatus;
}) {
  return {
    id: input.id,
    object: "subscription" as const,
    application: null,
    application_fee_percent: null,
    automatic_tax: { disabled_reason: null, enabled: false, liability: null },
    billing_cycle_anchor: input.item.current_period_start,
    billing_cycle_anchor_config: null,
    billing_mode: { flexible: { proration_discounts: "included" }, type: "flexible", updated_at: input.created },
    billing_schedules: [] as unknown[],
    billing_thresholds: null,
    cancel_at: null as number | null,
    cancel_at_period_end: false,
    canceled_at: null as number | null,
    cancellation_details: {
      comment: null as string | null,
      feedback: null as string | null,
      feedback_option: null,
      reason: null as string | null,
    },
    collection_method: "charge_automatically",
    created: input.created,
    currency: input.currency,
    customer: input.customer,
    customer_account: null,
    days_until_due: null,
    default_payment_method: input.defaultPaymentMethod,
    default_source: null,
    default_tax_rates: [] as unknown[],
    description: null,
    discounts: [] as string[],
    ended_at: null as number | null,
    invoice_settings: { account_tax_ids: null, custom_fields: null, description: null, footer: null, issuer: { type: "self" } },
    items: { ...list([input.item], `/v1/subscription_items?subscription=${input.id}`), total_count: 1 },
    latest_invoice: input.latestInvoice,
    livemode: false,
    managed_payments: null,
    metadata: input.metadata,
    next_pending_invoice_item_invoice: null,
    on_behalf_of: null,
    pause_collection: null,
    payment_settings: { payment_method_options: null, payment_method_types: null, save_default_payment_method: "off" },
    pending_invoice_item_interval: null,
    pending_setup_intent: null,
    pending_update: null,
    schedule: null,
    start_date: input.created,
    status: input.status as SubscriptionStatus,
    test_clock: null,
    transfer_data: null,
    trial_end: null,
    trial_settings: { end_behavior: { billing_cycle_anchor: null, missing_payment_method: "create_invoice" } },
    trial_start: null,
  };
}
export type Subscription = ReturnType<typeof subscriptionObject>;

export function formatAmount(amount: number, currency: string): string {
  return new Intl.NumberFormat("en-US", { style: "currency", currency: currency.toUpperCase() }).format(amount / 100);
}

export function invoiceLineObject(input: {
  id: string;
  invoice: string;
  subscription: string;
  item: SubscriptionItem;
  periodStart: number;
  periodEnd: number;
}) {
  const { price, quantity } = input.item;
  const amount = (price.unit_amount ?? 0) * quantity;
  return {
    id: input.id,
    object: "line_item" as const,
    amount,
    currency: price.currency,
    description: `${quantity} × ${price.nickname ?? price.id} (at ${formatAmount(price.unit_amount ?? 0, price.currency)} / month)`,
    discount_amounts: [] as unknown[],
    discountable: true,
    discounts: [] as string[],
    invoice: input.invoice,
    livemode: false,
    metadata: {} as Metadata,
    parent: {
      invoice_item_details: null,
      subscription_item_details: {
        invoice_item: null,
        proration: false,
        proration_details: { credited_items: null },
        subscription: input.subscription,
        subscription_item: input.item.id,
      },
      type: "subscription_item_details",
    },
    period: { end: input.periodEnd, start: input.periodStart },
    pretax_credit_amounts: [] as unknown[],
    pricing: {
      price_details: { price: price.id, product: price.product },
      type: "price_details" as const,
      unit_amount_decimal: price.unit_amount_decimal,
    },
    quantity,
    quantity_decimal: String(quantity),
    subscription: input.subscription,
    subtotal: amount,
    taxes: [] as unknown[],
  };
}
export type InvoiceLine = ReturnType<typeof invoiceLineObject>;

export type InvoiceStatus = "draft" | "open" | "paid" | "uncollectible" | "void";

export function invoiceObject(input: {
  id: string;
  created: number;
  customer: Customer;
  subscription: Subscription;
  billingReason: "subscription_create" | "subscription_cycle" | "subscription_update";
  line: InvoiceLine;
  periodStart: number;
  periodEnd: number;
}) {
  const total = input.line.amount;
  return {
    id: input.id,
    object: "invoice" as const,
    account_country: "US",
    account_name: "Berth",
    account_tax_ids: null,
    amount_due: total,
    amount_overpaid: 0,
    amount_paid: 0,
    amount_remaining: total,
    amount_shipping: 0,
    application: null,
    attempt_count: 0,
    attempted: false,
    auto_advance: true,
    automatic_tax: { disabled_reason: null, enabled: false, liability: null, provider: null, status: null },
    automatically_finalizes_at: null as number | null,
    billing_reason: input.billingReason as string,
    collection_method: "charge_automatically",
    created: input.created,
    currency: input.line.currency,
    custom_fields: null,
    customer: input.customer.id,
    customer_account: null,
    customer_address: null,
    customer_email: input.customer.email,
    customer_name: input.customer.name,
    customer_phone: null,
    customer_shipping: null,
    customer_tax_exempt: "none",
    customer_tax_ids: [] as unknown[],
    default_payment_method: null,
    default_source: null,
    default_tax_rates: [] as unknown[],
    description: null,
    discounts: [] as string[],
    due_date: null,
    effective_at: null as number | null,
    ending_balance: null as number | null,
    footer: null,
    from_invoice: null,
    hosted_invoice_url: null as string | null,
    invoice_pdf: null as string | null,
    issuer: { type: "self" },
    last_finalization_error: null,
    latest_revision: null,
    lines: { ...list([input.line], `/v1/invoices/${input.id}/lines`), total_count: 1 },
    livemode: false,
    metadata: {} as Metadata,
    next_payment_attempt: null as number | null,
    number: null as string | null,
    on_behalf_of: null,
    parent: {
      quote_details: null,
      subscription_details: { metadata: { ...input.subscription.metadata }, subscription: input.subscription.id },
      type: "subscription_details",
    },
    payment_settings: { default_mandate: null, payment_method_options: null, payment_method_types: null },
    period_end: input.periodEnd,
    period_start: input.periodStart,
    post_payment_credit_notes_amount: 0,
    pre_payment_credit_notes_amount: 0,
    receipt_number: null,
    rendering: null,
    shipping_cost: null,
    shipping_details: null,
    starting_balance: 0,
    statement_descriptor: null,
    status: "draft" as InvoiceStatus,
    status_transitions: {
      finalized_at: null as number | null,
      marked_uncollectible_at: null as number | null,
      paid_at: null as number | null,
      voided_at: null as number | null,
    },
    subtotal: total,
    subtotal_excluding_tax: total,
    test_clock: null,
    total,
    total_discount_amounts: [] as unknown[],
    total_excluding_tax: total,
    total_pretax_credit_amounts: [] as unknown[],
    total_taxes: [] as unknown[],
    webhooks_delivered_at: input.created as number | null,
  };
}
export type Invoice = ReturnType<typeof invoiceObject>;

/** Card details as Stripe reports them: never the number or the CVC. */
export interface CardDetails {
  brand: string;
  last4: string;
  exp_month: number;
  exp_year: number;
  fingerprint: string;
  funding: string;
  country: string;
}

function billingDetails(email: string | null, name: string | null) {
  return {
    address: { city: null, country: "US", line1: null, line2: null, postal_code: null, state: null },
    email,
    name,
    phone: null,
    tax_id: null,
  };
}

export function paymentMethodObject(input: { id: string; created: number; customer: string; card: CardDetails; email: string | null; name: string | null }) {
  const { card } = input;
  return {
    id: input.id,
    object: "payment_method" as const,
    allow_redisplay: "always",
    billing_details: billingDetails(input.email, input.name),
    card: {
      brand: card.brand,
      checks: { address_line1_check: null, address_postal_code_check: null, cvc_check: "pass" },
      country: card.country,
      display_brand: card.brand,
      exp_month: card.exp_month,
      exp_year: card.exp_year,
      fingerprint: card.fingerprint,
      funding: card.funding,
      generated_from: null,
      last4: card.last4,
      networks: { available: [card.brand], preferred: null },
      regulated_status: "unregulated",
      three_d_secure_usage: { supported: true },
      wallet: null,
    },
    created: input.created,
    customer: input.customer as string | null,
    customer_account: null,
    livemode: false,
    metadata: {} as Metadata,
    type: "card",
  };
}
export type PaymentMethod = ReturnType<typeof paymentMethodObject>;

export function chargeObject(input: {
  id: string;
  created: number;
  amount: number;
  currency: string;
  customer: Customer;
  paymentMethod: PaymentMethod;
  paymentIntent: string;
  balanceTransaction: string;
  description: string;
  receiptUrl: string;
}) {
  const { card } = input.paymentMethod;
  return {
    id: input.id,
    object: "charge" as const,
    amount: input.amount,
    amount_captured: input.amount,
    amount_refunded: 0,
    application: null,
    application_fee: null,
    application_fee_amount: null,
    balance_transaction: input.balanceTransaction,
    billing_details: snapshot(input.paymentMethod.billing_details),
    calculated_statement_descriptor: "BERTH",
    captured: true,
    created: input.created,
    currency: input.currency,
    customer: input.customer.id,
    description: input.description,
    disputed: false,
    failure_balance_transaction: null,
    failure_code: null,
    failure_message: null,
    fraud_details: {},
    livemode: false,
    metadata: {} as Metadata,
    on_behalf_of: null,
    outcome: {
      advice_code: null,
      network_advice_code: null,
      network_decline_code: null,
      network_status: "approved_by_network",
      reason: null,
      risk_level: "normal",
      risk_score: 32,
      seller_message: "Payment complete.",
      type: "authorized",
    },
    paid: true,
    payment_intent: input.paymentIntent,
    payment_method: input.paymentMethod.id,
    payment_method_details: {
      card: {
        amount_authorized: input.amount,
        authorization_code: "123456",
        brand: card.brand,
        checks: snapshot(card.checks),
        country: card.country,
        electronic_commerce_indicator: null,
        exp_month: card.exp_month,
        exp_year: card.exp_year,
        extended_authorization: { status: "disabled" },
        fingerprint: card.fingerprint,
        funding: card.funding,
        incremental_authorization: { status: "unavailable" },
        installments: null,
        last4: card.last4,
        mandate: null,
        multicapture: { status: "unavailable" },
        network: card.brand,
        network_token: { used: false },
        network_transaction_id: "104102978678771",
        overcapture: { maximum_amount_capturable: input.amount, status: "unavailable" },
        regulated_status: "unregulated",
        three_d_secure: null,
        transaction_link_id: null,
        wallet: null,
      },
      type: "card",
    },
    radar_options: {},
    receipt_email: input.customer.email,
    receipt_number: null,
    receipt_url: input.receiptUrl,
    refunded: false,
    review: null,
    shipping: null,
    source: null,
    source_transfer: null,
    statement_descriptor: null,
    statement_descriptor_suffix: null,
    status: "succeeded",
    transfer_data: null,
    transfer_group: null,
  };
}
export type Charge = ReturnType<typeof chargeObject>;

export type CheckoutStatus = "open" | "complete" | "expired";

export function checkoutSessionObject(input: {
  id: string;
  created: number;
  url: string;
  customer: string | null;
  customerEmail: string | null;
  clientReferenceId: string | null;
  amount: number;
  currency: string;
  successUrl: string;
  cancelUrl: string | null;
  metadata: Metadata;
}) {
  return {
    id: input.id,
    object: "checkout.session" as const,
    adaptive_pricing: { enabled: false },
    after_expiration: null,
    allow_promotion_codes: null,
    allowed_payment_method_types: null,
    amount_subtotal: input.amount,
    amount_total: input.amount,
    automatic_tax: { enabled: false, liability: null, provider: null, status: null },
    billing_address_collection: null,
    cancel_url: input.cancelUrl,
    client_reference_id: input.clientReferenceId,
    client_secret: null,
    collected_information: null as null | { business_name: null; individual_name: string | null; shipping_details: null },
    consent: null,
    consent_collection: null,
    created: input.created,
    currency: input.currency,
    currency_conversion: null,
    custom_fields: [] as unknown[],
    custom_text: { after_submit: null, shipping_address: null, submit: null, terms_of_service_acceptance: null },
    customer: input.customer,
    customer_account: null,
    customer_creation: (input.customer === null ? "always" : null) as string | null,
    customer_details: null as null | {
      address: { city: null; country: string; line1: null; line2: null; postal_code: null; state: null };
      business_name: null;
      email: string | null;
      individual_name: null;
      name: string | null;
      phone: null;
      tax_exempt: string;
      tax_ids: unknown[];
    },
    customer_email: input.customerEmail,
    discounts: [] as unknown[],
    expires_at: input.created + 24 * 60 * 60,
    integration_identifier: null,
    invoice: null as string | null,
    invoice_creation: null,
    livemode: false,
    locale: null,
    managed_payments: null,
    metadata: input.metadata,
    mode: "subscription",
    origin_context: null,
    payment_intent: null,
    payment_link: null,
    payment_method_collection: "always",
    payment_method_configuration_details: null,
    payment_method_options: { card: { request_three_d_secure: "automatic" } },
    payment_method_types: ["card"],
    payment_status: "unpaid" as "unpaid" | "paid" | "no_payment_required",
    permissions: null,
    phone_number_collection: { enabled: false },
    recovered_from: null,
    saved_payment_method_options: { allow_redisplay_filters: ["always"], payment_method_remove: "disabled", payment_method_save: null },
    setup_intent: null,
    shipping_address_collection: null,
    shipping_cost: null,
    shipping_options: [] as unknown[],
    status: "open" as CheckoutStatus,
    submit_type: null,
    subscription: null as string | null,
    success_url: input.successUrl,
    total_details: { amount_discount: 0, amount_shipping: 0, amount_tax: 0 },
    ui_mode: "hosted_page",
    url: input.url as string | null,
    wallet_options: null,
  };
}
export type CheckoutSession = ReturnType<typeof checkoutSessionObject>;

export function portalSessionObject(input: { id: string; created: number; customer: string; configuration: string; returnUrl: string | null; url: string }) {
  return {
    id: input.id,
    object: "billing_portal.session" as const,
    configuration: input.configuration,
    created: input.created,
    customer: input.customer,
    customer_account: null,
    flow: null,
    livemode: false,
    locale: null,
    on_behalf_of: null,
    return_url: input.returnUrl,
    url: input.url,
  };
}
export type PortalSession = ReturnType<typeof portalSessionObject>;

export function eventObject(input: {
  id: string;
  created: number;
  type: string;
  object: unknown;
  previousAttributes?: Record<string, unknown>;
  request: { id: string | null; idempotency_key: string | null };
}) {
  return {
    id: input.id,
    object: "event" as const,
    api_version: API_VERSION,
    created: input.created,
    data: input.previousAttributes === undefined ? { object: input.object } : { object: input.object, previous_attributes: input.previousAttributes },
    livemode: false,
    pending_webhooks: 1,
    request: input.request,
    type: input.type,
  };
}
export type StripeEvent = ReturnType<typeof eventObject>;
