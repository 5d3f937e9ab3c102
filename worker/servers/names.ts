import { z } from "zod";

/**
 * A homeserver's name is a DNS label under our domain and becomes its Matrix
 * server_name, so it can never change. Names a person could mistake for ours,
 * or that infrastructure needs, are reserved.
 */
export const RESERVED_NAMES = new Set([
  "www",
  "admin",
  "administrator",
  "matrix",
  "api",
  "app",
  "apps",
  "auth",
  "login",
  "account",
  "accounts",
  "billing",
  "dashboard",
  "status",
  "support",
  "help",
  "docs",
  "blog",
  "mail",
  "email",
  "smtp",
  "imap",
  "pop",
  "ftp",
  "ns",
  "ns1",
  "ns2",
  "dns",
  "cdn",
  "static",
  "assets",
  "media",
  "dev",
  "test",
  "staging",
  "berth",
  "element",
  "synapse",
  "federation",
  "turn",
  "stun",
  "localhost",
  "root",
  "postmaster",
  "abuse",
  "hostmaster",
  "webmaster",
  "security",
  "operator",
  "operators",
  "internal",
]);

export const NAME_MIN = 3;
export const NAME_MAX = 40;

/** Why a name is refused, or null when it is acceptable. Shared by the API and the create form. */
export function nameProblem(name: string): string | null {
  if (name.length < NAME_MIN || name.length > NAME_MAX) return `must be ${NAME_MIN} to ${NAME_MAX} characters`;
  if (!/^[a-z0-9-]+$/.test(name)) return "may contain only lower-case letters a–z, digits and hyphens";
  if (name.startsWith("-") || name.endsWith("-")) return "must not start or end with a hyphen";
  if (/^xn--/.test(name) || name.slice(2, 4) === "--") return "must not look like an encoded (punycode) name";
  if (RESERVED_NAMES.has(name)) return "is reserved";
  return null;
}

export const serverNameSchema = z.string().transform((value, ctx) => {
  const problem = nameProblem(value);
  if (problem) {
    ctx.addIssue({ code: "custom", message: problem });
    return z.NEVER;
  }
  return value;
});
