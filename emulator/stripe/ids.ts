import { createHmac, randomBytes } from "node:crypto";

const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

export function randomBase62(length: number): string {
  const bytes = randomBytes(length);
  let out = "";
  for (const byte of bytes) out += ALPHABET[byte % ALPHABET.length];
  return out;
}

// Lengths follow what Stripe's own ids look like, so code that stores them
// (column sizes, logging) meets realistic values.
const LENGTHS: Record<string, number> = {
  cus: 14,
  prod: 14,
  si: 14,
  req: 14,
  cs_test: 58,
};

/** A Stripe-looking id such as `sub_1QfGh…`; random, never reused. */
export function newId(prefix: string): string {
  const length = LENGTHS[prefix] ?? 24;
  return `${prefix}_${length >= 24 ? "1" : ""}${randomBase62(length >= 24 ? length - 1 : length)}`;
}

// Per-process key, so a fingerprint identifies a card within one run without
// being a reversible function of its number.
const FINGERPRINT_KEY = randomBytes(32);

export function cardFingerprint(normalizedNumber: string): string {
  const digest = createHmac("sha256", FINGERPRINT_KEY).update(normalizedNumber).digest();
  let out = "";
  for (const byte of digest.subarray(0, 16)) out += ALPHABET[byte % ALPHABET.length];
  return out;
}
