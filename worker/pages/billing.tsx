import type { Plan } from "../billing/plans";
import type { Invoice, User } from "../db/schema";
import type { presentSubscription } from "../http/present";
import { Alert, Layout } from "./layout";

type SubscriptionView = ReturnType<typeof presentSubscription>;

const money = (minor: number, currency: string) => new Intl.NumberFormat("en-US", { style: "currency", currency: currency.toUpperCase() }).format(minor / 100);
const day = (iso: string | null) =>
  iso ? new Date(iso).toLocaleDateString("en-US", { year: "numeric", month: "long", day: "numeric", timeZone: "UTC" }) : "—";

const STATE_TEXT: Record<string, string> = {
  active: "Your homeservers are running.",
  grace: "Your last payment failed. Your homeservers keep running until the grace period ends.",
  suspended: "Your homeservers are suspended until the subscription is paid.",
  deletion_due: "Your homeservers were suspended for too long and are due for deletion.",
};

function PlanChoice(props: { plans: readonly Plan[]; verified: boolean }) {
  return (
    <section class="card" aria-labelledby="plans-heading">
      <h2 id="plans-heading">Choose a plan</h2>
      {props.verified ? null : (
        <div>
          <Alert kind="error" message="Verify your email address before subscribing." />
          <form method="post" action="/account/resend-verification">
            <button type="submit">Send a new confirmation link</button>
          </form>
        </div>
      )}
      <ul class="plans">
        {props.plans.map((plan) => (
          <li class="plan">
            <h3>{plan.name}</h3>
            <p class="price">{money(plan.monthlyPrice, plan.currency)} / month</p>
            <p class="hint">
              {plan.resources.memoryMiB / 1024} GiB memory · {plan.resources.cpus} CPU · {plan.resources.storageGiB} GiB storage · up to {plan.maxUsers} users
            </p>
            <form method="post" action="/billing/checkout">
              <input type="hidden" name="plan" value={plan.id} />
              <button type="submit" disabled={!props.verified} aria-label={`Subscribe to ${plan.name}`}>
                Subscribe
              </button>
            </form>
          </li>
        ))}
      </ul>
      <p class="hint">Payment is handled by Stripe: your card details go to Stripe, never to us.</p>
    </section>
  );
}

export function BillingPage(props: {
  user: User;
  subscription: SubscriptionView;
  plan: Plan | undefined;
  plans: readonly Plan[];
  invoices: Invoice[];
  error?: string | undefined;
}) {
  const { subscription, plan } = props;
  const hasSubscription = subscription.status !== "none";
  return (
    <Layout title="Billing" viewer={props.user}>
      <h1>Billing</h1>
      <Alert kind="error" message={props.error} />
      {hasSubscription ? (
        <section class="card" aria-labelledby="subscription-heading">
          <h2 id="subscription-heading">Your plan</h2>
          <dl class="facts">
            <dt>Plan</dt>
            <dd>{plan ? `${plan.name} — ${money(plan.monthlyPrice, plan.currency)} / month` : subscription.plan}</dd>
            <dt>Status</dt>
            <dd>
              <span class="badge">{subscription.status}</span>
            </dd>
            <dt>{subscription.cancelAtPeriodEnd ? "Ends on" : "Renews on"}</dt>
            <dd>{day(subscription.currentPeriodEnd)}</dd>
          </dl>
          <p>{STATE_TEXT[subscription.entitlement.state] ?? ""}</p>
          <form method="post" action="/billing/portal">
            <button type="submit">Manage subscription</button>
          </form>
          <p class="hint">Change plan, update your card, cancel, or download invoices on Stripe's billing portal.</p>
        </section>
      ) : (
        <PlanChoice plans={props.plans} verified={props.user.emailVerifiedAt !== null} />
      )}
      <section class="card" aria-labelledby="invoices-heading">
        <h2 id="invoices-heading">Invoices</h2>
        {props.invoices.length === 0 ? (
          <p>No invoices yet.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Number</th>
                <th scope="col">Period</th>
                <th scope="col">Amount</th>
                <th scope="col">Status</th>
                <th scope="col">Links</th>
              </tr>
            </thead>
            <tbody>
              {props.invoices.map((invoice) => (
                <tr>
                  <td>{invoice.number ?? invoice.id}</td>
                  <td>
                    {day(invoice.periodStart.toISOString())} – {day(invoice.periodEnd.toISOString())}
                  </td>
                  <td>{money(invoice.amountDue, invoice.currency)}</td>
                  <td>{invoice.status}</td>
                  <td>
                    {invoice.hostedInvoiceUrl ? <a href={invoice.hostedInvoiceUrl}>View</a> : null}{" "}
                    {invoice.invoicePdf ? <a href={invoice.invoicePdf}>PDF</a> : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </Layout>
  );
}
