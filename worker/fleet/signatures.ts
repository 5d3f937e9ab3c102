import { base64UrlDecode, utf8 } from "../crypto/bytes";

/** Whether `signature` (base64url) is the host's Ed25519 signature of `message`, by its public key (raw, base64url). */
export async function verifyHostSignature(publicKey: string, signature: string, message: string): Promise<boolean> {
  const key = base64UrlDecode(publicKey);
  const signed = base64UrlDecode(signature);
  if (!key || !signed) return false;
  try {
    const imported = await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, imported, signed, utf8(message));
  } catch {
    return false;
  }
}
