import { describe, expect, it } from "vitest";
import { normalizeEmail, passwordSchema } from "../../../worker/auth/credentials";

describe("email addresses", () => {
  it("have one canonical form: trimmed, lower case, NFC, punycode domain", () => {
    expect(normalizeEmail("  Alice@Example.COM ")).toBe("alice@example.com");
    expect(normalizeEmail("jose\u0301@example.com")).toBe("jos\u00e9@example.com");
    expect(normalizeEmail("josé@example.com")).toBe(normalizeEmail("jose\u0301@EXAMPLE.com"));
    expect(normalizeEmail("anna@bücher.example")).toBe("anna@xn--bcher-kva.example");
    expect(normalizeEmail("first.last+tag@sub.example.org")).toBe("first.last+tag@sub.example.org");
  });

  it.each([
    ["", "empty"],
    ["no-at-sign.example.com", "no @"],
    ["@example.com", "no local part"],
    ["alice@", "no domain"],
    ["alice@localhost", "single-label domain"],
    ["alice@127.0.0.1", "IP literal"],
    ["alice@[127.0.0.1]", "bracketed IP literal"],
    ['"alice smith"@example.com', "quoted local part"],
    ["alice smith@example.com", "inner space"],
    ["al\u200bice@example.com", "zero-width space"],
    ["alice\u202e@example.com", "right-to-left override"],
    ["alice\u0000@example.com", "NUL"],
    ["alice\n@example.com", "newline (header injection)"],
    ["alice@example.com\r\nBcc: x@example.com", "CRLF injection"],
    [".alice@example.com", "leading dot"],
    ["al..ice@example.com", "double dot"],
    ["alice@-example.com", "label starting with a hyphen"],
    ["alice@example..com", "empty label"],
    [`${"a".repeat(65)}@example.com`, "local part over 64"],
    [`a@${"b".repeat(250)}.com`, "over 254 characters"],
    ["alice@exa_mple.com", "underscore in domain"],
    ["alice@example.com/evil", "path in domain"],
    ["alice@example.com:8080", "port in domain"],
  ])("rejects %j (%s)", (input) => {
    expect(normalizeEmail(input)).toBeNull();
  });
});

describe("passwords", () => {
  it("count characters, not bytes or UTF-16 units, after NFC", () => {
    expect(passwordSchema.safeParse("🔑".repeat(8)).success).toBe(true);
    expect(passwordSchema.safeParse("e\u0301".repeat(8)).success).toBe(true);
    expect(passwordSchema.parse("e\u0301".repeat(8))).toBe("\u00e9".repeat(8));
  });

  it("must be 8 to 256 characters", () => {
    expect(passwordSchema.safeParse("1234567").success).toBe(false);
    expect(passwordSchema.safeParse("12345678").success).toBe(true);
    expect(passwordSchema.safeParse("x".repeat(256)).success).toBe(true);
    expect(passwordSchema.safeParse("x".repeat(257)).success).toBe(false);
  });

  it("refuse control characters", () => {
    expect(passwordSchema.safeParse("password\u0000").success).toBe(false);
    expect(passwordSchema.safeParse("pass\nword1").success).toBe(false);
  });
});
