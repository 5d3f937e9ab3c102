// Bench-only Worker: times the product's scryptKey inside workerd. Bundled and run by bench/kdf.mjs.
import { scrypt } from "node:crypto";
import { CURRENT_PARAMS, scryptKey, type ScryptImplementation } from "../worker/auth/password";

interface Job {
  password: string;
  /** hex */
  salt: string;
  count: number;
  implementation?: ScryptImplementation;
}

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

export default {
  async fetch(request: Request): Promise<Response> {
    const job = await request.json<Job>();
    const salt = Uint8Array.from(job.salt.match(/../g) ?? [], (pair) => parseInt(pair, 16));
    let key: Uint8Array = new Uint8Array(0);
    // Date.now() advances during CPU work under local workerd (production freezes it).
    const start = Date.now();
    for (let i = 0; i < job.count; i++) key = await scryptKey(job.password, salt, CURRENT_PARAMS, job.implementation);
    const msPerHash = (Date.now() - start) / job.count;
    return Response.json({ msPerHash, key: hex(key), params: CURRENT_PARAMS, nativeScrypt: typeof scrypt === "function" });
  },
};
