import { afterEach, describe, expect, it, vi } from "vitest";
import { dumpDatabase } from "../helpers";
import { deliverAll, emulatorControl, paidButUndelivered, takeDeliveries } from "./stripe-helpers";

afterEach(() => vi.restoreAllMocks());

describe("card data", () => {
  it("is never stored or logged, even though Stripe's webhook payloads carry it", async () => {
    const logged: string[] = [];
    for (const method of ["log", "info", "warn", "error", "debug"] as const) {
      vi.spyOn(console, method).mockImplementation((...args: unknown[]) => void logged.push(args.map(String).join(" ")));
    }
    const paid = await paidButUndelivered();
    await emulatorControl(`/_emulator/subscriptions/${paid.subscriptionId}/fail-payment`);
    const deliveries = [...paid.deliveries, ...(await takeDeliveries(paid.customerId))];

    // The payloads really do carry card details: otherwise this test would prove nothing.
    const cards = deliveries.flatMap((delivery) => {
      const object = JSON.parse(delivery.payload).data.object;
      return [object.card, object.payment_method_details?.card].filter(Boolean);
    }) as { last4: string; brand: string; exp_month: number; exp_year: number; fingerprint: string }[];
    expect(cards.length).toBeGreaterThan(0);

    await deliverAll(deliveries);
    const stored = await dumpDatabase();
    expect(stored).toContain(paid.subscriptionId);
    for (const card of cards) {
      for (const secret of [card.fingerprint, `"${card.last4}"`, card.brand]) {
        expect(stored).not.toContain(secret);
        expect(logged.join("\n")).not.toContain(secret);
      }
    }
    for (const key of ["last4", "exp_month", "exp_year", "fingerprint", "brand", "card", "payment_method_details"]) {
      expect(stored).not.toContain(`"${key}"`);
    }
  });
});
