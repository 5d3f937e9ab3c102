// All emulator state, in memory: the objects by id, the emitted events, and
// the idempotency cache. Seeded with a Product and a monthly Price per plan.
import type { Plan } from "../../worker/billing/plans.ts";
import { newId } from "./ids.ts";
import {
  productObject,
  priceObject,
  type Charge,
  type CheckoutSession,
  type Customer,
  type Invoice,
  type Metadata,
  type PaymentMethod,
  type PortalSession,
  type Price,
  type Product,
  type StripeEvent,
  type Subscription,
} from "./objects.ts";
import { nowSeconds } from "./time.ts";

/** A Checkout Session plus what was asked for it that the object itself doesn't show. */
export interface CheckoutRecord {
  session: CheckoutSession;
  lineItems: { id: string; price: string; quantity: number }[];
  subscriptionMetadata: Metadata;
}

export interface StoredEvent {
  event: StripeEvent;
  /** The exact body delivered and signed. */
  payload: string;
  /** The customer the event concerns, for per-customer filtering. */
  customer: string | null;
}

export interface IdempotentResult {
  method: string;
  path: string;
  body: string;
  status: number;
  response: string;
}

export class Store {
  readonly customers = new Map<string, Customer>();
  readonly products = new Map<string, Product>();
  readonly prices = new Map<string, Price>();
  readonly checkoutSessions = new Map<string, CheckoutRecord>();
  readonly portalSessions = new Map<string, PortalSession>();
  readonly subscriptions = new Map<string, Subscription>();
  readonly invoices = new Map<string, Invoice>();
  readonly paymentMethods = new Map<string, PaymentMethod>();
  readonly charges = new Map<string, Charge>();
  readonly events: StoredEvent[] = [];
  readonly idempotency = new Map<string, IdempotentResult>();
  /** The one portal configuration every portal session uses. */
  readonly portalConfiguration = newId("bpc");
  private invoiceSequence = 0;

  constructor(plans: readonly Plan[]) {
    const created = nowSeconds();
    for (const plan of plans) {
      const product = productObject({ id: newId("prod"), created, plan });
      this.products.set(product.id, product);
      const price = priceObject({ created, plan, product: product.id });
      this.prices.set(price.id, price);
    }
  }

  nextInvoiceNumber(): string {
    this.invoiceSequence += 1;
    return `BERTH-${String(this.invoiceSequence).padStart(4, "0")}`;
  }

  /** Any stored object by id (used to expand references). */
  find(id: string): object | undefined {
    return (
      this.customers.get(id) ??
      this.prices.get(id) ??
      this.products.get(id) ??
      this.checkoutSessions.get(id)?.session ??
      this.portalSessions.get(id) ??
      this.subscriptions.get(id) ??
      this.invoices.get(id) ??
      this.paymentMethods.get(id) ??
      this.charges.get(id)
    );
  }

  subscriptionsOf(customer: string): Subscription[] {
    return [...this.subscriptions.values()].filter((subscription) => subscription.customer === customer);
  }

  invoicesOf(customer: string): Invoice[] {
    return [...this.invoices.values()].filter((invoice) => invoice.customer === customer);
  }
}
