import { describe, expect, it } from "vitest";
import { call, expectError, mailbox, PRODUCTION, signUp } from "../helpers";

describe("the dev mailbox", () => {
  it("lists every email as JSON, newest first: to, subject, text, links, sent-at", async () => {
    const { email } = await signUp();
    await call("/api/auth/password-reset/request", { method: "POST", body: { email } });
    const mails = await mailbox(email);
    expect(mails.map((mail) => mail.subject)).toEqual(["Reset your Berth password", "Confirm your email address"]);
    for (const mail of mails) {
      expect(Object.keys(mail).sort()).toEqual(["links", "sentAt", "subject", "text", "to"]);
      expect(mail.to).toBe(email);
      expect(new Date(mail.sentAt).toISOString()).toBe(mail.sentAt);
    }
    const all = (await (await call("/dev/mailbox.json")).json()) as { to: string }[];
    expect(all.some((mail) => mail.to === email)).toBe(true);
  });

  it("mints a join token for the local agent", async () => {
    const response = await call("/dev/join-token", { method: "POST" });
    expect(response.status).toBe(201);
    expect(await response.json()).toMatchObject({ token: expect.stringMatching(/^bjt_/), region: "us-east" });
  });

  it("shows the same mail as a page", async () => {
    const { email } = await signUp();
    const page = await call("/dev/mailbox");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    const html = await page.text();
    expect(html).toContain(email);
    expect(html).toContain("/verify-email?token=");
  });

  it("does not exist in the production configuration", async () => {
    await expectError(await call("/dev/mailbox", { env: PRODUCTION }), 404, "not_found");
    await expectError(await call("/dev/mailbox.json", { env: PRODUCTION }), 404, "not_found");
    await expectError(await call("/dev/join-token", { method: "POST", env: PRODUCTION }), 404, "not_found");
    expect((await call("/api/health", { env: PRODUCTION })).status).toBe(200);
  });
});
