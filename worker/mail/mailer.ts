import { desc, eq } from "drizzle-orm";
import type { Database } from "../db/client";
import { devOutbox } from "../db/schema";
import type { WorkContext } from "../context";
import { ApiError } from "../errors";

export interface Mail {
  to: string;
  subject: string;
  text: string;
  /** Every link in the text, in order; the dev mailbox shows them for tests and people. */
  links: string[];
}

export interface Mailer {
  send(mail: Mail): Promise<void>;
}

export class MailUnavailable extends ApiError {
  constructor() {
    super(503, "mail_unavailable", "We could not send email just now. Please try again in a few minutes.");
  }
}

/** Development: mail is stored in D1 and shown at /dev/mailbox. */
export class OutboxMailer implements Mailer {
  constructor(
    private readonly db: Database,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async send(mail: Mail): Promise<void> {
    await this.db.insert(devOutbox).values({ ...mail, sentAt: this.now() });
  }
}

/** Newest first; optionally only the mail sent to one address. */
export async function readOutbox(db: Database, to?: string) {
  const rows = await db
    .select()
    .from(devOutbox)
    .where(to === undefined ? undefined : eq(devOutbox.to, to))
    .orderBy(desc(devOutbox.id))
    .limit(200);
  return rows.map(({ to, subject, text, links, sentAt }) => ({ to, subject, text, links, sentAt: sentAt.toISOString() }));
}

/** Resend's HTTP API (https://resend.com/docs/api-reference/emails/send-email). */
export class ResendMailer implements Mailer {
  constructor(
    private readonly apiKey: string,
    private readonly from: string,
    // Wrapped: Workers' fetch throws when called with another `this`.
    private readonly fetcher: typeof fetch = (input, init) => fetch(input, init),
  ) {}

  async send(mail: Mail): Promise<void> {
    const response = await this.fetcher("https://api.resend.com/emails", {
      method: "POST",
      headers: { Authorization: `Bearer ${this.apiKey}`, "Content-Type": "application/json" },
      body: JSON.stringify({ from: this.from, to: [mail.to], subject: mail.subject, text: mail.text }),
    });
    if (!response.ok) {
      // The provider's status only: its body can echo the message, which holds a token.
      console.error(JSON.stringify({ event: "mail_send_failed", provider: "resend", status: response.status }));
      throw new MailUnavailable();
    }
  }
}

/** Resend when the configuration has its API key (production always does); otherwise, in development, the outbox. */
export function mailerFor(ctx: WorkContext): Mailer {
  const { mail } = ctx.config;
  return mail.provider === "resend" ? new ResendMailer(mail.apiKey, mail.from) : new OutboxMailer(ctx.db, () => ctx.now);
}
