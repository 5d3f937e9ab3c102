import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { database } from "../../../worker/db/client";
import { MailUnavailable, mailerFor, MailerNotConfigured, OutboxMailer, ResendMailer } from "../../../worker/mail/mailer";
import { templates } from "../../../worker/mail/templates";
import { call, expectError, uniqueEmail, PASSWORD } from "../helpers";

const mail = templates.passwordReset("someone@example.com", "https://berth.example/reset-password?token=abc");

/** Stands in for Resend's servers, which this machine cannot reach; records what it was sent. */
function fakeResend(status: number) {
  const requests: Request[] = [];
  const fetcher = (async (input: RequestInfo | URL, init?: RequestInit) => {
    requests.push(new Request(input, init));
    return new Response(JSON.stringify(status < 300 ? { id: "email_123" } : { message: "nope" }), { status });
  }) as typeof fetch;
  return { requests, fetcher };
}

describe("mail", () => {
  it("goes to the outbox in development when no provider is configured", () => {
    expect(mailerFor({ ...env, ENVIRONMENT: "development", RESEND_API_KEY: undefined }, database(env.DB), () => new Date())).toBeInstanceOf(
      OutboxMailer,
    );
  });

  it("uses Resend when its key is configured, and is refused in production without one", () => {
    const db = database(env.DB);
    const configured = { ...env, ENVIRONMENT: "production", RESEND_API_KEY: "re_test", MAIL_FROM: "Berth <no-reply@berth.example>" };
    expect(mailerFor(configured, db, () => new Date())).toBeInstanceOf(ResendMailer);
    expect(() => mailerFor({ ...env, ENVIRONMENT: "production", RESEND_API_KEY: undefined }, db, () => new Date())).toThrow(
      MailerNotConfigured,
    );
  });

  it("is sent to Resend's API with the key, sender, recipient, subject and text", async () => {
    const resend = fakeResend(200);
    await new ResendMailer("re_test_key", "Berth <no-reply@berth.example>", resend.fetcher).send(mail);
    const [request] = resend.requests;
    expect(request!.method).toBe("POST");
    expect(request!.url).toBe("https://api.resend.com/emails");
    expect(request!.headers.get("authorization")).toBe("Bearer re_test_key");
    expect(await request!.json()).toEqual({
      from: "Berth <no-reply@berth.example>",
      to: ["someone@example.com"],
      subject: mail.subject,
      text: mail.text,
    });
  });

  it("a provider failure is a clear 503, not a silent loss", async () => {
    const resend = fakeResend(500);
    await expect(new ResendMailer("re_test_key", "x@berth.example", resend.fetcher).send(mail)).rejects.toBeInstanceOf(MailUnavailable);
  });

  it("in production without a provider, sign-up fails loudly instead of dropping the email", async () => {
    const response = await call("/api/auth/signup", {
      method: "POST",
      body: { email: uniqueEmail(), password: PASSWORD },
      env: { ENVIRONMENT: "production", RESEND_API_KEY: undefined },
    });
    expect(response.status).toBe(500);
    await expectError(response, 500, "internal_error");
  });
});
