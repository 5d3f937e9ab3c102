// HTML for the hosted pages: Checkout, the Customer Portal and invoices.
// Plain forms with labelled fields, no JavaScript; every value is escaped.
import type { CheckoutSession, Customer, Invoice, PortalSession, Price, Subscription } from "./objects.ts";
import { formatAmount } from "./objects.ts";

interface Html {
  readonly html: string;
}

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

function render(value: unknown): string {
  if (value === null || value === undefined || value === false) return "";
  if (Array.isArray(value)) return value.map(render).join("");
  if (typeof value === "object" && "html" in value) return (value as Html).html;
  return escapeHtml(String(value));
}

/** A template whose interpolations are escaped unless already Html. */
function h(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]!;
  values.forEach((value, index) => {
    out += render(value) + strings[index + 1]!;
  });
  return { html: out };
}

const STYLE = `
  body { font-family: system-ui, sans-serif; margin: 0; background: #f6f8fa; color: #1a1f36; }
  main { max-width: 32rem; margin: 2rem auto; padding: 2rem; background: #fff; border-radius: 8px; box-shadow: 0 1px 3px #0002; }
  .test-mode { display: inline-block; background: #ffde92; color: #8a4b00; font-size: .75rem; font-weight: 600; padding: .1rem .5rem; border-radius: 4px; }
  label { display: block; margin-top: 1rem; font-weight: 500; }
  input { width: 100%; box-sizing: border-box; padding: .6rem; font-size: 1rem; border: 1px solid #ccd; border-radius: 6px; }
  input[aria-invalid="true"] { border-color: #df1b41; }
  button { margin-top: 1.25rem; padding: .7rem 1.2rem; font-size: 1rem; border: 0; border-radius: 6px; background: #635bff; color: #fff; cursor: pointer; }
  form.inline { display: inline; }
  form.inline button { margin-top: .5rem; }
  .error { color: #df1b41; font-weight: 500; }
  .muted { color: #697386; font-size: .875rem; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: .25rem 1rem; }
  dt { color: #697386; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .4rem .25rem; border-bottom: 1px solid #e3e8ee; }
`;

function page(title: string, body: Html): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
<p><span class="test-mode">Test mode</span> <span class="muted">Local Stripe emulator</span></p>
${body.html}
</main>
</body>
</html>
`;
}

function date(seconds: number): string {
  return new Date(seconds * 1000).toLocaleDateString("en-US", { timeZone: "UTC", year: "numeric", month: "long", day: "numeric" });
}

function perMonth(price: Price, quantity = 1): string {
  const each = formatAmount(price.unit_amount, price.currency);
  return quantity === 1 ? `${each} per month` : `${quantity} × ${each} per month`;
}

export function planName(price: Price): string {
  return price.nickname ?? price.id;
}

export interface CheckoutForm {
  session: CheckoutSession;
  price: Price;
  quantity: number;
  email: string | null;
  error?: { message: string; field?: string };
  /** Non-secret values to keep after an error (never the card number or CVC). */
  values?: { expiry?: string; name?: string };
}

export function checkoutPage(form: CheckoutForm): string {
  const { session, price, error } = form;
  const invalid = (field: string) => (error?.field === field ? h` aria-invalid="true" aria-describedby="form-error"` : "");
  const body = h`
${session.cancel_url ? h`<p><a href="${session.cancel_url}">Back</a></p>` : ""}
<h1>Subscribe to ${planName(price)}</h1>
<p><strong>${formatAmount(price.unit_amount * form.quantity, price.currency)}</strong> per month</p>
<dl>
  <dt>Plan</dt><dd>${planName(price)} — ${perMonth(price, form.quantity)}</dd>
  <dt>Email</dt><dd>${form.email ?? "—"}</dd>
</dl>
${error ? h`<p id="form-error" class="error" role="alert">${error.message}</p>` : ""}
<form method="post" action="/c/pay/${session.id}" novalidate>
  <label for="cardNumber">Card number</label>
  <input id="cardNumber" name="cardNumber" inputmode="numeric" autocomplete="cc-number" placeholder="1234 1234 1234 1234" required${invalid("cardNumber")}>
  <label for="expiry">Expiration (MM / YY)</label>
  <input id="expiry" name="expiry" inputmode="numeric" autocomplete="cc-exp" placeholder="MM / YY" value="${form.values?.expiry ?? ""}" required${invalid("expiry")}>
  <label for="cvc">CVC</label>
  <input id="cvc" name="cvc" inputmode="numeric" autocomplete="cc-csc" placeholder="CVC" required${invalid("cvc")}>
  <label for="name">Cardholder name</label>
  <input id="name" name="name" autocomplete="cc-name" placeholder="Full name on card" value="${form.values?.name ?? ""}" required${invalid("name")}>
  <button type="submit">Subscribe</button>
</form>
<p class="muted">Test cards: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0341 is declined. Any future expiry, any 3-digit CVC.</p>
`;
  return page(`Subscribe to ${planName(price)}`, body);
}

export function checkoutClosedPage(session: CheckoutSession): string {
  const message =
    session.status === "complete"
      ? "This checkout session is complete: the subscription has been paid for."
      : "This checkout session has expired. Go back and start again.";
  const link = session.status === "complete" ? session.success_url.replaceAll("{CHECKOUT_SESSION_ID}", session.id) : session.cancel_url;
  return page(
    "Checkout session closed",
    h`
<h1>${session.status === "complete" ? "Already paid" : "Session expired"}</h1>
<p role="status">${message}</p>
${link ? h`<p><a href="${link}">Back</a></p>` : ""}
`,
  );
}

export interface PortalView {
  session: PortalSession;
  customer: Customer;
  subscriptions: { subscription: Subscription; price: Price }[];
  prices: Price[];
  invoices: Invoice[];
}

function subscriptionSection(view: PortalView, subscription: Subscription, price: Price): Html {
  const item = subscription.items.data[0]!;
  const base = `/p/session/${view.session.id}/subscriptions/${subscription.id}`;
  const when = subscription.cancel_at_period_end
    ? h`<p>Cancels on ${date(subscription.cancel_at ?? item.current_period_end)}</p>`
    : h`<p>Renews on ${date(item.current_period_end)}</p>`;
  const others = view.prices.filter((candidate) => candidate.id !== price.id && candidate.active);
  return h`
<section aria-label="${planName(price)} subscription">
  <h2>Current plan</h2>
  <p><strong>${planName(price)}</strong> — ${perMonth(price, item.quantity)}</p>
  <p>Status: ${subscription.status.replace("_", " ")}</p>
  ${when}
  ${others.length > 0 ? h`<h3>Change plan</h3>` : ""}
  ${others.map(
    (other) => h`
  <form class="inline" method="post" action="${base}/switch">
    <input type="hidden" name="price" value="${other.id}">
    <button type="submit">Switch to ${planName(other)}</button> <span class="muted">${perMonth(other, item.quantity)}</span>
  </form><br>`,
  )}
  <h3>Cancellation</h3>
  ${
    subscription.cancel_at_period_end
      ? h`<form method="post" action="${base}/renew"><button type="submit">Renew plan</button></form>`
      : h`<form method="post" action="${base}/cancel"><button type="submit">Cancel plan</button></form>`
  }
</section>`;
}

export function portalPage(view: PortalView): string {
  const body = h`
<h1>Berth billing</h1>
<p class="muted">${view.customer.email ?? view.customer.id}</p>
${view.subscriptions.length === 0 ? h`<p>You have no current subscription.</p>` : ""}
${view.subscriptions.map(({ subscription, price }) => subscriptionSection(view, subscription, price))}
<section aria-labelledby="invoices">
  <h2 id="invoices">Invoices</h2>
  ${
    view.invoices.length === 0
      ? h`<p>No invoices yet.</p>`
      : h`<table>
    <thead><tr><th>Date</th><th>Invoice</th><th>Amount</th><th>Status</th></tr></thead>
    <tbody>${view.invoices.map(
      (invoice) => h`
      <tr>
        <td>${date(invoice.created)}</td>
        <td>${invoice.hosted_invoice_url ? h`<a href="${invoice.hosted_invoice_url}">${invoice.number}</a> (<a href="${invoice.invoice_pdf ?? ""}">PDF</a>)` : "Draft"}</td>
        <td>${formatAmount(invoice.amount_due, invoice.currency)}</td>
        <td>${invoice.status}</td>
      </tr>`,
    )}</tbody>
  </table>`
  }
</section>
${view.session.return_url ? h`<p><a href="${view.session.return_url}">Return to Berth</a></p>` : ""}
`;
  return page("Berth billing", body);
}

export function invoicePage(invoice: Invoice): string {
  const line = invoice.lines.data[0];
  const body = h`
<h1>Invoice ${invoice.number ?? "(draft)"}</h1>
<dl>
  <dt>Status</dt><dd>${invoice.status}</dd>
  <dt>Amount due</dt><dd>${formatAmount(invoice.amount_due, invoice.currency)}</dd>
  <dt>Amount paid</dt><dd>${formatAmount(invoice.amount_paid, invoice.currency)}</dd>
  <dt>Billed to</dt><dd>${invoice.customer_email ?? invoice.customer}</dd>
  <dt>Date</dt><dd>${date(invoice.created)}</dd>
  ${invoice.status_transitions.paid_at ? h`<dt>Paid on</dt><dd>${date(invoice.status_transitions.paid_at)}</dd>` : ""}
</dl>
${line ? h`<p>${line.description} — ${date(line.period.start)} to ${date(line.period.end)}</p>` : ""}
${invoice.invoice_pdf ? h`<p><a href="${invoice.invoice_pdf}">Download PDF</a></p>` : ""}
`;
  return page(`Invoice ${invoice.number ?? invoice.id}`, body);
}

export function messagePage(title: string, message: string): string {
  return page(title, h`<h1>${title}</h1><p>${message}</p>`);
}
