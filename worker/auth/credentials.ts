import { z } from "zod";

const LOCAL_PART = /^[\p{L}\p{M}\p{N}!#$%&'*+/=?^_`{|}~.-]+$/u;
const DOMAIN_INPUT = /^[\p{L}\p{M}\p{N}.-]+$/u;
const ASCII_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * One canonical form per mailbox, so the same person cannot hold two accounts
 * through case, Unicode composition or IDN spelling: NFC, lower case, the
 * domain in punycode. Returns null for anything that is not a plain address
 * (quoted local parts, IP literals, control, invisible or bidi characters).
 */
export function normalizeEmail(raw: string): string | null {
  const email = raw.normalize("NFC").trim();
  if (email.length > 254) return null;
  const at = email.lastIndexOf("@");
  if (at <= 0) return null;
  const local = email.slice(0, at).toLowerCase();
  const domainInput = email.slice(at + 1);
  if (local.length > 64 || !LOCAL_PART.test(local)) return null;
  if (local.startsWith(".") || local.endsWith(".") || local.includes("..")) return null;
  if (!DOMAIN_INPUT.test(domainInput)) return null;
  let domain: string;
  try {
    domain = new URL(`http://${domainInput}`).hostname;
  } catch {
    return null;
  }
  const labels = domain.split(".");
  if (labels.length < 2 || !labels.every((label) => ASCII_LABEL.test(label))) return null;
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return null;
  return `${local}@${domain}`;
}

export const emailSchema = z
  .string()
  .max(320, "must be at most 254 characters")
  .transform((value, ctx) => {
    const email = normalizeEmail(value);
    if (email === null) {
      ctx.addIssue({ code: "custom", message: "must be a valid email address" });
      return z.NEVER;
    }
    return email;
  });

export const PASSWORD_MIN = 8;
export const PASSWORD_MAX = 256;

// Length counts characters (code points) after NFC, so "é" typed either way is one character.
export const passwordSchema = z
  .string()
  .max(PASSWORD_MAX * 4, `must be ${PASSWORD_MIN} to ${PASSWORD_MAX} characters`)
  .transform((value, ctx) => {
    const password = value.normalize("NFC");
    const length = [...password].length;
    if (length < PASSWORD_MIN || length > PASSWORD_MAX) {
      ctx.addIssue({ code: "custom", message: `must be ${PASSWORD_MIN} to ${PASSWORD_MAX} characters` });
      return z.NEVER;
    }
    if (/\p{Cc}/u.test(password)) {
      ctx.addIssue({ code: "custom", message: "must not contain control characters" });
      return z.NEVER;
    }
    return password;
  });

/** A password that is checked against a stored hash, not set: only bounded, never rejected for style. */
export const currentPasswordSchema = z
  .string()
  .min(1, "is required")
  .max(PASSWORD_MAX * 4, "is too long")
  .transform((value) => value.normalize("NFC"));
