// The pages a customer's browser visits: Checkout (/c/pay/:id), the Customer
// Portal (/p/session/:id) and hosted invoices (/i/:id, /i/:id/pdf).
import { completeCheckout, getSubscription, refreshCheckoutSession, updateSubscription, type SubscriptionChanges } from "./billing.ts";
import { StripeError } from "./errors.ts";
import { act, type Env } from "./env.ts";
import { NO_REQUEST } from "./events.ts";
import { findRoute, html, redirect, type Incoming, type Outgoing, type Route } from "./http.ts";
import { formatAmount } from "./objects.ts";
import { checkoutClosedPage, checkoutPage, invoicePage, messagePage, planName, portalPage } from "./pages.ts";
import { textPdf } from "./pdf.ts";
import type { CheckoutRecord } from "./store.ts";

type Handler = (env: Env, request: Incoming, params: Record<string, string>) => Outgoing;

function notFound(what: string): Outgoing {
  return html(404, messagePage("Not found", `There is no ${what} here. The link may be wrong, or the emulator was restarted (it keeps everything in memory).`));
}

function renderCheckout(env: Env, record: CheckoutRecord, status: number, extra: Pick<Parameters<typeof checkoutPage>[0], "error" | "values"> = {}): Outgoing {
  const line = record.lineItems[0]!;
  const price = env.store.prices.get(line.price)!;
  const customer = record.session.customer === null ? undefined : env.store.customers.get(record.session.customer);
  return html(
    status,
    checkoutPage({
      session: record.session,
      price,
      quantity: line.quantity,
      email: customer?.email ?? record.session.customer_email,
      ...extra,
    }),
  );
}

function showCheckout(env: Env, _request: Incoming, { id }: Record<string, string>): Outgoing {
  const record = env.store.checkoutSessions.get(id!);
  if (!record) return notFound("checkout session");
  const session = act(env, NO_REQUEST, (ctx) => refreshCheckoutSession(ctx, record));
  if (session.status !== "open") return html(200, checkoutClosedPage(session));
  return renderCheckout(env, record, 200);
}

function payCheckout(env: Env, request: Incoming, { id }: Record<string, string>): Outgoing {
  const record = env.store.checkoutSessions.get(id!);
  if (!record) return notFound("checkout session");
  const form = new URLSearchParams(request.body);
  const card = { number: form.get("cardNumber") ?? "", expiry: form.get("expiry") ?? "", cvc: form.get("cvc") ?? "" };
  const name = (form.get("name") ?? "").trim();
  const values = { expiry: card.expiry, name };
  if (record.session.status === "open" && name === "") {
    return renderCheckout(env, record, 400, { error: { message: "Enter the cardholder name.", field: "name" }, values });
  }
  try {
    const result = act(env, NO_REQUEST, (ctx) => completeCheckout(ctx, id!, { card, name }));
    return redirect(result.redirectUrl);
  } catch (error) {
    if (!(error instanceof StripeError)) throw error;
    if (record.session.status !== "open") return html(400, checkoutClosedPage(record.session));
    return renderCheckout(env, record, error.status, { error: { message: error.message, field: error.param }, values });
  }
}

function showPortal(env: Env, _request: Incoming, { id }: Record<string, string>): Outgoing {
  const session = env.store.portalSessions.get(id!);
  if (!session) return notFound("portal session");
  const customer = env.store.customers.get(session.customer)!;
  const subscriptions = env.store
    .subscriptionsOf(customer.id)
    .filter((subscription) => subscription.status !== "canceled" && subscription.status !== "incomplete_expired")
    .reverse()
    .map((subscription) => ({ subscription, price: subscription.items.data[0]!.price }));
  const invoices = env.store
    .invoicesOf(customer.id)
    .filter((invoice) => invoice.status !== "draft")
    .reverse();
  return html(200, portalPage({ session, customer, subscriptions, prices: [...env.store.prices.values()], invoices }));
}

function portalAction(change: (form: URLSearchParams, itemId: string) => SubscriptionChanges): Handler {
  return (env, request, { id, subscription: subscriptionId }) => {
    const session = env.store.portalSessions.get(id!);
    const subscription = env.store.subscriptions.get(subscriptionId!);
    if (!session || !subscription || subscription.customer !== session.customer) return notFound("subscription");
    try {
      act(env, NO_REQUEST, (ctx) => {
        const current = getSubscription(ctx.store, subscription.id);
        return updateSubscription(ctx, current.id, change(new URLSearchParams(request.body), current.items.data[0]!.id));
      });
    } catch (error) {
      if (!(error instanceof StripeError)) throw error;
      return html(error.status, messagePage("Could not update the subscription", error.message));
    }
    return redirect(`${env.publicUrl}/p/session/${session.id}`);
  };
}

function showInvoice(env: Env, _request: Incoming, { id }: Record<string, string>): Outgoing {
  const invoice = env.store.invoices.get(id!);
  return invoice ? html(200, invoicePage(invoice)) : notFound("invoice");
}

function invoicePdf(env: Env, _request: Incoming, { id }: Record<string, string>): Outgoing {
  const invoice = env.store.invoices.get(id!);
  if (!invoice) return notFound("invoice");
  const line = invoice.lines.data[0];
  const price = line ? env.store.prices.get(line.pricing.price_details.price) : undefined;
  const body = textPdf([
    "Berth",
    `Invoice ${invoice.number ?? "(draft)"}`,
    `Billed to: ${invoice.customer_email ?? invoice.customer}`,
    `Date: ${new Date(invoice.created * 1000).toISOString().slice(0, 10)}`,
    `${price ? planName(price) : "Subscription"}: ${line?.description ?? ""}`,
    `Amount due: ${formatAmount(invoice.amount_due, invoice.currency)}`,
    `Amount paid: ${formatAmount(invoice.amount_paid, invoice.currency)}`,
    `Status: ${invoice.status}`,
  ]);
  return {
    status: 200,
    headers: { "Content-Type": "application/pdf", "Content-Disposition": `inline; filename="${invoice.number ?? invoice.id}.pdf"` },
    body,
  };
}

const routes: Route<Handler>[] = [
  { method: "GET", pattern: "/c/pay/:id", handle: showCheckout },
  { method: "POST", pattern: "/c/pay/:id", handle: payCheckout },
  { method: "GET", pattern: "/p/session/:id", handle: showPortal },
  {
    method: "POST",
    pattern: "/p/session/:id/subscriptions/:subscription/switch",
    handle: portalAction((form, item) => ({ itemPrice: { item, price: form.get("price") ?? "" } })),
  },
  { method: "POST", pattern: "/p/session/:id/subscriptions/:subscription/cancel", handle: portalAction(() => ({ cancelAtPeriodEnd: true })) },
  { method: "POST", pattern: "/p/session/:id/subscriptions/:subscription/renew", handle: portalAction(() => ({ cancelAtPeriodEnd: false })) },
  { method: "GET", pattern: "/i/:id", handle: showInvoice },
  { method: "GET", pattern: "/i/:id/pdf", handle: invoicePdf },
];

export function handleHosted(request: Incoming, env: Env): Outgoing {
  const found = findRoute(routes, request);
  return found ? found.handle(env, request, found.params) : notFound("page");
}
