import { describe, expect, it } from "vitest";
import { applyMetadata, parseStripeForm } from "../../emulator/stripe/forms.ts";
import { addMonths, nextPeriodEnd } from "../../emulator/stripe/time.ts";

describe("Stripe's form encoding", () => {
  it("nests brackets into objects and indexed arrays", () => {
    const body =
      "mode=subscription&line_items[0][price]=price_x&line_items[0][quantity]=1&line_items[1][price]=price_y" +
      "&metadata[user_id]=u1&subscription_data[metadata][plan]=starter&success_url=http%3A%2F%2Fx%2F%3Fs%3D%7BCHECKOUT_SESSION_ID%7D";
    expect(parseStripeForm(body)).toEqual({
      mode: "subscription",
      line_items: [{ price: "price_x", quantity: "1" }, { price: "price_y" }],
      metadata: { user_id: "u1" },
      subscription_data: { metadata: { plan: "starter" } },
      success_url: "http://x/?s={CHECKOUT_SESSION_ID}",
    });
  });

  it("reads percent-encoded brackets, appends with [] and orders indexes numerically", () => {
    expect(parseStripeForm("expand%5B%5D=latest_invoice&expand[]=customer&items[10][id]=b&items[2][id]=a")).toEqual({
      expand: ["latest_invoice", "customer"],
      items: [{ id: "a" }, { id: "b" }],
    });
  });

  it("refuses prototype keys and a name used both as a value and a hash", () => {
    expect(() => parseStripeForm("metadata[__proto__][x]=1")).toThrow(/unknown parameter/);
    expect(() => parseStripeForm("metadata=x&metadata[a]=1")).toThrow(/both a value and a hash/);
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });

  it("applies metadata as Stripe does: '' removes a key, an empty hash clears", () => {
    expect(applyMetadata({ a: "1", b: "2" }, parseStripeForm("metadata[a]=&metadata[c]=3"))).toEqual({ b: "2", c: "3" });
    expect(applyMetadata({ a: "1" }, parseStripeForm("metadata="))).toEqual({});
    expect(() => applyMetadata({}, parseStripeForm(`metadata[${"k".repeat(41)}]=v`))).toThrow(/40 characters/);
  });
});

describe("monthly periods", () => {
  it("add calendar months, clamping to the month's last day but keeping the anchor day", () => {
    const jan31 = Date.UTC(2027, 0, 31, 10, 30) / 1000;
    const feb = addMonths(jan31, 1);
    expect(new Date(feb * 1000).toISOString()).toBe("2027-02-28T10:30:00.000Z");
    expect(new Date(nextPeriodEnd(jan31, feb) * 1000).toISOString()).toBe("2027-03-31T10:30:00.000Z");
    expect(new Date(addMonths(Date.UTC(2027, 11, 15) / 1000, 1) * 1000).toISOString()).toBe("2028-01-15T00:00:00.000Z");
  });
});
