import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ConfigError, workerConfig } from "../../../worker/config";
import { workContext } from "../../../worker/context";
import { MailUnavailable, mailerFor, OutboxMailer, ResendMailer } from "../../../worker/mail/mailer";
import { templates } from "../../../worker/mail/templates";
import { call, expectError, uniqueEmail, PASSWORD, PRODUCTION } from "../helpers";

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
    expect(mailerFor(workContext({ ...env, RESEND_API_KEY: undefined }, new Date()))).toBeInstanceOf(OutboxMailer);
  });

  it("uses Resend when its key is configured, and production does not start without one", () => {
    expect(mailerFor(workContext({ ...env, RESEND_API_KEY: "re_test", MAIL_FROM: "Berth <no-reply@berth.example>" }, new Date()))).toBeInstanceOf(ResendMailer);
    expect(mailerFor(workContext({ ...env, ...PRODUCTION }, new Date()))).toBeInstanceOf(ResendMailer);
    expect(() => workerConfig({ ...env, ...PRODUCTION, RESEND_API_KEY: undefined })).toThrow(ConfigError);
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

  it("in production without a provider, nobody is signed up (the Worker does not run) rather than an email dropped", async () => {
    const email = uniqueEmail();
    const response = await call("/api/auth/signup", {
      method: "POST",
      body: { email, password: PASSWORD },
      env: { ...PRODUCTION, RESEND_API_KEY: undefined },
    });
    await expectError(response, 503, "misconfigured");
    expect(await env.DB.prepare("SELECT id FROM users WHERE email = ?").bind(email).first()).toBeNull();
  });
});
