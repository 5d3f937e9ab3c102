// Test cards, checked the way Checkout would. The result carries only what
// Stripe itself keeps (brand, last 4, expiry, fingerprint); the number and CVC
// go no further than this module.
import { StripeError } from "./errors.ts";
import { cardFingerprint } from "./ids.ts";
import type { CardDetails } from "./objects.ts";

export interface CardInput {
  number: string;
  expiry: string;
  cvc: string;
}

const SUCCEEDS = "4242424242424242";
const DECLINED = "4000000000000341";

function cardError(status: number, code: string, message: string, param: string, declineCode?: string): StripeError {
  return new StripeError({ status, type: "card_error", code, message, param, declineCode });
}

/** Month and four-digit year from "MM / YY", "MM/YY", "MM/YYYY" or "MMYY". */
function parseExpiry(raw: string): { month: number; year: number } | null {
  const compact = raw.replace(/\s+/g, "");
  const match = /^(\d{1,2})\/?(\d{2}|\d{4})$/.exec(compact.includes("/") ? compact : compact.replace(/^(\d{2})(\d{2,4})$/, "$1/$2"));
  if (!match) return null;
  const month = Number(match[1]);
  const year = match[2]!.length === 2 ? 2000 + Number(match[2]) : Number(match[2]);
  return { month, year };
}

export function checkCard(input: CardInput, now = new Date()): CardDetails {
  const number = input.number.replace(/[\s-]/g, "");
  if (number !== SUCCEEDS && number !== DECLINED) {
    throw cardError(400, "invalid_number", "Your card number is invalid.", "cardNumber");
  }
  const expiry = parseExpiry(input.expiry);
  if (!expiry) throw cardError(400, "invalid_expiry_month", "Your card's expiration date is incomplete.", "expiry");
  if (expiry.month < 1 || expiry.month > 12) {
    throw cardError(400, "invalid_expiry_month", "Your card's expiration month is invalid.", "expiry");
  }
  const currentYear = now.getUTCFullYear();
  const currentMonth = now.getUTCMonth() + 1;
  if (expiry.year < currentYear || (expiry.year === currentYear && expiry.month < currentMonth)) {
    throw cardError(400, "invalid_expiry_year", "Your card's expiration date is in the past.", "expiry");
  }
  if (expiry.year > currentYear + 50) {
    throw cardError(400, "invalid_expiry_year", "Your card's expiration year is invalid.", "expiry");
  }
  if (!/^\d{3,4}$/.test(input.cvc.trim())) {
    throw cardError(400, "invalid_cvc", "Your card's security code is invalid.", "cvc");
  }
  if (number === DECLINED) {
    throw cardError(402, "card_declined", "Your card was declined.", "cardNumber", "generic_decline");
  }
  return {
    brand: "visa",
    last4: number.slice(-4),
    exp_month: expiry.month,
    exp_year: expiry.year,
    fingerprint: cardFingerprint(number),
    funding: "credit",
    country: "US",
  };
}
