import { describe, expect, it } from "vitest";
import { CURRENT_PARAMS, formatPhc, hashPassword, needsRehash, parsePhc, scryptKey, verifyPassword } from "../../../worker/auth/password";
import { hex, utf8 } from "../../../worker/crypto/bytes";

const WORKERS_SCRYPT_CAP = 2 ** 20; // N·r·p, Workers production
const ISOLATE_MEMORY_BUDGET = 64 * 1024 * 1024;
// OWASP Password Storage Cheat Sheet: equivalent scrypt minimums.
const OWASP_MINIMUMS = [
  { ln: 17, r: 8, p: 1 },
  { ln: 16, r: 8, p: 2 },
  { ln: 15, r: 8, p: 3 },
  { ln: 14, r: 8, p: 5 },
  { ln: 13, r: 8, p: 10 },
];

describe("password hashing", () => {
  it("uses parameters at OWASP strength that fit Workers' production limits", () => {
    const { ln, r, p } = CURRENT_PARAMS;
    expect(OWASP_MINIMUMS.some((min) => ln >= min.ln && r >= min.r && p >= min.p)).toBe(true);
    expect(2 ** ln * r * p).toBeLessThanOrEqual(WORKERS_SCRYPT_CAP);
    expect(128 * 2 ** ln * r).toBeLessThanOrEqual(ISOLATE_MEMORY_BUDGET);
  });

  it("stores a PHC string carrying algorithm, parameters, salt and hash", async () => {
    const phc = await hashPassword("correct horse battery staple");
    expect(phc).toMatch(/^\$scrypt\$ln=15,r=8,p=3\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
    expect(phc).not.toContain("correct horse");
    const parsed = parsePhc(phc)!;
    expect(parsed.params).toEqual(CURRENT_PARAMS);
    expect(formatPhc(parsed.params, parsed.salt, parsed.key)).toBe(phc);
  });

  it("salts every hash", async () => {
    expect(await hashPassword("same password")).not.toBe(await hashPassword("same password"));
  });

  it("verifies the right password and rejects a wrong or altered one", async () => {
    const phc = await hashPassword("correct horse battery staple");
    expect(await verifyPassword("correct horse battery staple", phc)).toBe(true);
    expect(await verifyPassword("correct horse battery stapl", phc)).toBe(false);
    expect(await verifyPassword("Correct horse battery staple", phc)).toBe(false);
    // A character inside the hash: all six of its bits count (the last one's lowest bits are padding).
    const at = phc.length - 10;
    const tampered = `${phc.slice(0, at)}${phc[at] === "A" ? "B" : "A"}${phc.slice(at + 1)}`;
    expect(await verifyPassword("correct horse battery staple", tampered)).toBe(false);
    expect(await verifyPassword("anything", "not a phc string")).toBe(false);
  });

  it("produces identical bytes natively and with the portable @noble/hashes implementation", async () => {
    const salt = utf8("0123456789abcdef");
    for (const params of [
      { ln: 10, r: 8, p: 1 },
      { ln: 12, r: 4, p: 2 },
      { ln: 11, r: 8, p: 3 },
    ]) {
      const native = await scryptKey("pässwörd 🔑", salt, params, "native");
      const portable = await scryptKey("pässwörd 🔑", salt, params, "portable");
      expect(hex(native)).toBe(hex(portable));
    }
  });

  it("matches the RFC 7914 scrypt test vector", async () => {
    // RFC 7914 §12: P="pleaseletmein", S="SodiumChloride", N=16384, r=8, p=1; first 32 bytes of the 64-byte output.
    const key = await scryptKey("pleaseletmein", utf8("SodiumChloride"), { ln: 14, r: 8, p: 1 }, "native");
    expect(hex(key)).toBe("7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2");
  });

  it("asks for a rehash when the stored parameters differ from today's", async () => {
    const weaker = await hashPassword("correct horse battery staple", { ln: 12, r: 8, p: 1 });
    expect(needsRehash(weaker)).toBe(true);
    expect(needsRehash(await hashPassword("correct horse battery staple"))).toBe(false);
    expect(needsRehash("garbage")).toBe(true);
  });
});
