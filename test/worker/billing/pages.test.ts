import { describe, expect, it } from "vitest";
import { call, logIn, verifiedUser } from "../helpers";
import { subscriber } from "./stripe-helpers";

const form = { "content-type": "application/x-www-form-urlencoded" };

describe("billing pages", () => {
  it("need a session", async () => {
    for (const path of ["/billing", "/billing/success", "/billing/cancel"]) {
      const response = await call(path);
      expect(response.status).toBe(303);
      expect(response.headers.get("location")).toBe("/login");
    }
  });

  it("offer the plans to an account without a subscription; subscribing redirects to Checkout", async () => {
    const cookie = await logIn((await verifiedUser()).email);
    const html = await (await call("/billing", { cookie })).text();
    expect(html).toContain("Choose a plan");
    expect(html).toContain("$9.00 / month");
    expect(html).toContain("No invoices yet.");
    const response = await call("/billing/checkout", { method: "POST", rawBody: "plan=team", headers: form, cookie });
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toMatch(/\/c\/pay\/cs_test_/);
  });

  it("show an unknown plan's refusal on the page", async () => {
    const cookie = await logIn((await verifiedUser()).email);
    const response = await call("/billing/checkout", { method: "POST", rawBody: "plan=gold", headers: form, cookie });
    expect(response.status).toBe(400);
    expect(await response.text()).toContain("plan: choose one of the plans");
  });

  it("show a subscriber's plan, renewal date and invoice, and open the portal", async () => {
    const { cookie } = await subscriber("team");
    const html = await (await call("/billing", { cookie })).text();
    expect(html).toContain("Team — $29.00 / month");
    expect(html).toContain("Renews on");
    expect(html).toMatch(/<td>paid<\/td>/);
    const portal = await call("/billing/portal", { method: "POST", rawBody: "", headers: form, cookie });
    expect(portal.status).toBe(303);
    expect(portal.headers.get("location")).toMatch(/\/p\/session\/bps_/);
  });

  it("say thank you after Checkout and nothing was charged after a cancel", async () => {
    const cookie = await logIn((await verifiedUser()).email);
    expect(await (await call("/billing/success?session_id=cs_test_x", { cookie })).text()).toContain("Your payment went through.");
    expect(await (await call("/billing/cancel", { cookie })).text()).toContain("Nothing was charged.");
  });
});
