import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { verify } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { helloSigningInput } from "../../protocol/messages.ts";
import { CredentialError, generateHostKey, keyPath, loadHostKey, publicKeyBase64url, saveHostKey, signHello } from "../../agent/credentials.ts";
import { publicKeyFromRaw, runCleanups, tempDir } from "./helpers.ts";

afterEach(runCleanups);

describe("host credentials", () => {
  it("writes the private key with mode 0600 and reads it back", () => {
    const dir = tempDir();
    const key = generateHostKey();
    const old = process.umask(0o000); // even a permissive umask must not widen the mode
    try {
      saveHostKey(dir, key);
    } finally {
      process.umask(old);
    }
    expect(statSync(keyPath(dir)).mode & 0o777).toBe(0o600);
    expect(readFileSync(keyPath(dir), "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    const loaded = loadHostKey(dir);
    expect(publicKeyBase64url(loaded)).toBe(publicKeyBase64url(key));
  });

  it("exports the public key as 32 raw bytes, base64url", () => {
    const raw = Buffer.from(publicKeyBase64url(generateHostKey()), "base64url");
    expect(raw.length).toBe(32);
  });

  it.each([0o640, 0o644, 0o604, 0o660])("refuses a key file with mode %s", (mode) => {
    const dir = tempDir();
    saveHostKey(dir, generateHostKey());
    chmodSync(keyPath(dir), mode);
    expect(() => loadHostKey(dir)).toThrow(CredentialError);
    expect(() => loadHostKey(dir)).toThrow(/readable by its owner only.*chmod 600/);
  });

  it("refuses a missing key and a file that is no key", () => {
    const dir = tempDir();
    expect(() => loadHostKey(dir)).toThrow(/not enrolled/);
    writeFileSync(keyPath(dir), "not a key", { mode: 0o600 });
    expect(() => loadHostKey(dir)).toThrow(/not a usable private key/);
  });

  it("signs the hello so that the exported public key verifies it, for this host and nonce only", () => {
    const key = generateHostKey();
    const publicKey = publicKeyFromRaw(publicKeyBase64url(key));
    const signature = Buffer.from(signHello(key, "host_a", "nonce-1"), "base64url");
    const check = (hostId: string, nonce: string) => verify(null, Buffer.from(helloSigningInput(hostId, nonce)), publicKey, signature);
    expect(check("host_a", "nonce-1")).toBe(true);
    expect(check("host_a", "nonce-2")).toBe(false);
    expect(check("host_b", "nonce-1")).toBe(false);
    const other = publicKeyFromRaw(publicKeyBase64url(generateHostKey()));
    expect(verify(null, Buffer.from(helloSigningInput("host_a", "nonce-1")), other, signature)).toBe(false);
  });
});
