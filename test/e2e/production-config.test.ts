// The dev mailbox (and any /dev route) exists only under development settings:
// the production configuration (wrangler.toml as deployed) answers 404 there.
import { randomUUID } from "node:crypto";
import { describe, expect, inject, it } from "vitest";

const devBaseUrl = inject("devBaseUrl");
const prodBaseUrl = inject("prodBaseUrl");

interface MailboxMessage {
  to: string;
  subject: string;
  text: string;
  links: string[];
  sentAt: string;
}

async function expectJsonNotFound(response: Response) {
  expect(response.status).toBe(404);
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  const body = (await response.json()) as { error?: { code?: unknown; message?: unknown } };
  expect(Object.keys(body)).toEqual(["error"]);
  expect(body.error?.code).toBe("not_found");
  expect(typeof body.error?.message).toBe("string");
  expect(body.error?.message).not.toBe("");
}

describe("production configuration (scripts/dev.mjs --production)", () => {
  it("answers /dev/mailbox with a JSON 404", async () => {
    await expectJsonNotFound(await fetch(`${prodBaseUrl}/dev/mailbox`, { redirect: "manual" }));
  });

  it("answers /dev/mailbox.json with a JSON 404, with or without a filter", async () => {
    await expectJsonNotFound(await fetch(`${prodBaseUrl}/dev/mailbox.json`, { redirect: "manual" }));
    await expectJsonNotFound(await fetch(`${prodBaseUrl}/dev/mailbox.json?to=someone%40example.com`, { redirect: "manual" }));
  });

  it("still serves the health check and the home page", async () => {
    const health = await fetch(`${prodBaseUrl}/api/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok" });

    const home = await fetch(`${prodBaseUrl}/`, { redirect: "manual" });
    expect(home.status).toBe(200);
    expect(home.headers.get("content-type")).toMatch(/^text\/html/);
    const html = await home.text();
    expect(html).toMatch(/^<!doctype html>/i);
    expect(html).toContain("<title>Managed Matrix homeservers · Berth</title>");
    expect(html).toContain('href="/signup"');
  });
});

describe("development configuration (npm run dev)", () => {
  it("serves /dev/mailbox.json as a JSON array", async () => {
    const response = await fetch(`${devBaseUrl}/dev/mailbox.json`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    expect(Array.isArray(await response.json())).toBe(true);
  });

  it("delivers sign-up mail to the mailbox, filtered by ?to=, with links on the dev origin", async () => {
    const email = `mailbox-${randomUUID()}@example.com`;
    const signup = await fetch(`${devBaseUrl}/signup`, {
      method: "POST",
      body: new URLSearchParams({ email, password: `pw-${randomUUID()}` }),
      redirect: "manual",
    });
    expect(signup.status).toBe(303);
    expect(signup.headers.get("location")).toBe("/login?notice=signed_up");

    const response = await fetch(`${devBaseUrl}/dev/mailbox.json?to=${encodeURIComponent(email)}`);
    expect(response.status).toBe(200);
    const messages = (await response.json()) as MailboxMessage[];
    expect(messages).toHaveLength(1);
    const [message] = messages;
    expect(message!.to).toBe(email);
    expect(Number.isNaN(Date.parse(message!.sentAt))).toBe(false);
    const verifyLink = message!.links.find((link) => link.includes("/verify-email?token="));
    expect(verifyLink, JSON.stringify(message)).toBeDefined();
    expect(new URL(verifyLink!).origin).toBe(new URL(devBaseUrl).origin);
    expect(message!.text).toContain(verifyLink!);

    const page = await fetch(`${devBaseUrl}/dev/mailbox?to=${encodeURIComponent(email)}`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    expect(await page.text()).toContain(email);
  });
});
