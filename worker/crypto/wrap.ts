import { base64Decode, base64Encode, randomBytes, utf8 } from "./bytes";

/**
 * Secrets stored in D1 are wrapped: AES-256-GCM under a key HKDF-derived from
 * a Worker secret, with what the secret belongs to as associated data (so a
 * wrapped value copied onto another row does not unwrap). `info` separates the
 * keys derived from one secret for different uses.
 */
export function deriveWrappingKey(secret: string, info: string): Promise<CryptoKey> {
  return crypto.subtle
    .importKey("raw", utf8(secret), "HKDF", false, ["deriveKey"])
    .then((material) =>
      crypto.subtle.deriveKey({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: utf8(info) }, material, { name: "AES-GCM", length: 256 }, false, [
        "encrypt",
        "decrypt",
      ]),
    );
}

const derivedKeys = new Map<string, Promise<CryptoKey>>();

/** deriveWrappingKey, derived once per isolate for each secret and use. */
export function cachedWrappingKey(secret: string, info: string): Promise<CryptoKey> {
  const id = `${info}\n${secret}`;
  let key = derivedKeys.get(id);
  if (!key) {
    key = deriveWrappingKey(secret, info);
    derivedKeys.set(id, key);
  }
  return key;
}

/** `<iv>.<ciphertext and tag>`, both base64. */
export async function wrapSecret(key: CryptoKey, associatedData: string, raw: Uint8Array): Promise<string> {
  const iv = randomBytes(12);
  const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: utf8(associatedData) }, key, raw);
  return `${base64Encode(iv)}.${base64Encode(new Uint8Array(sealed))}`;
}

/** Throws when the key or the associated data is not the one it was wrapped with. */
export async function unwrapSecret(key: CryptoKey, associatedData: string, wrapped: string): Promise<ArrayBuffer> {
  const [iv, sealed] = wrapped.split(".");
  return crypto.subtle.decrypt({ name: "AES-GCM", iv: base64Decode(iv!), additionalData: utf8(associatedData) }, key, base64Decode(sealed!));
}
