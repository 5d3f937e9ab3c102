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

/**
 * Top-level domains that never name a public host: a custom server name under one
 * would point delegation (and our check of it) at a private network or nowhere.
 */
const NON_PUBLIC_TLDS = new Set(["localhost", "local", "internal", "invalid", "arpa", "onion", "lan", "home", "corp", "intranet", "example", "localdomain"]);

/** `.test` is reserved for testing (RFC 6761): the tests' stand-in domains use it, production refuses it. */
const TESTING_TLD = "test";

export const CUSTOM_SERVER_NAME_MAX = 253;

/**
 * Why a customer's own domain is refused as a Matrix server name, or null when it is acceptable.
 * The name is matched as given (lower case, no trailing dot, no port): it becomes the server_name
 * in every user id, so it must be exactly what the customer publishes delegation on.
 */
export function customServerNameProblem(domain: string, options: { homeserverDomain: string; production: boolean }): string | null {
  if (domain.length === 0 || domain.length > CUSTOM_SERVER_NAME_MAX) return `must be 1 to ${CUSTOM_SERVER_NAME_MAX} characters`;
  if (!/^[a-z0-9.-]+$/.test(domain)) return "may contain only lower-case letters a–z, digits, hyphens and dots (no port, no scheme)";
  const labels = domain.split(".");
  if (labels.length < 2) return "must be a domain name with at least two labels, such as example.com";
  for (const label of labels) {
    if (label.length === 0 || label.length > 63) return "each label must be 1 to 63 characters";
    if (label.startsWith("-") || label.endsWith("-")) return "no label may start or end with a hyphen";
  }
  const ours = options.homeserverDomain.toLowerCase();
  if (domain === ours || domain.endsWith(`.${ours}`)) return `must be your own domain, not ${ours} or a name under it`;
  const tld = labels.at(-1) ?? "";
  // A numeric last label is how IPv4 literals (and their shorthand forms) look.
  if (/^[0-9]+$/.test(tld)) return "must be a domain name, not an IP address";
  if (NON_PUBLIC_TLDS.has(tld) || (options.production && tld === TESTING_TLD)) return "must be a public domain name";
  return null;
}

/**
 * A customer's own domain as the API takes it: compared and stored in its canonical form (lower case,
 * without the root's trailing dot), so `ACME.com.` is the same domain as `acme.com` and cannot be
 * claimed beside it; then held to customServerNameProblem.
 */
export const customServerNameSchema = (options: { homeserverDomain: string; production: boolean }) =>
  z
    .string()
    .max(CUSTOM_SERVER_NAME_MAX + 1)
    .transform((value, ctx) => {
      const domain = value.toLowerCase().replace(/\.$/, "");
      const problem = customServerNameProblem(domain, options);
      if (problem) {
        ctx.addIssue({ code: "custom", message: problem });
        return z.NEVER;
      }
      return domain;
    });
