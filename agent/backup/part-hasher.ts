// The SHA-256 of each upload part and of the whole upload, in a worker thread: hashing every byte
// twice is most of an upload's CPU, and on the main thread it held back reading, compressing and
// encrypting. Parts live in SharedArrayBuffers, which the worker reads in place (no copies).
import { Worker } from "node:worker_threads";

/** CommonJS, evaluated in the worker: hashes parts in the order they come, the whole along with them. */
const HASHER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const whole = createHash("sha256");
parentPort.on("message", ({ id, buffer, byteOffset, length }) => {
  if (buffer === undefined) return parentPort.postMessage({ id, sha256: whole.digest("hex") });
  const part = new Uint8Array(buffer, byteOffset, length);
  whole.update(part);
  parentPort.postMessage({ id, sha256: createHash("sha256").update(part).digest("hex") });
});
`;

export class PartHasher {
  private readonly worker = new Worker(HASHER_SOURCE, { eval: true });
  private readonly waiting = new Map<number, { resolve: (sha256: string) => void; reject: (error: Error) => void }>();
  private nextId = 0;

  constructor() {
    this.worker.on("message", ({ id, sha256 }: { id: number; sha256: string }) => {
      this.waiting.get(id)?.resolve(sha256);
      this.waiting.delete(id);
    });
    this.worker.on("error", (error) => this.failAll(error));
    this.worker.on("exit", () => this.failAll(new Error("the hashing thread exited")));
  }

  /** A buffer parts can be hashed in: the worker shares its memory. */
  static buffer(size: number): Buffer {
    return Buffer.from(new SharedArrayBuffer(size));
  }

  /** The part's SHA-256 (hex), taken into the whole's; parts count in the order given. Leave it unchanged until this resolves. */
  part(part: Buffer): Promise<string> {
    if (!(part.buffer instanceof SharedArrayBuffer)) throw new TypeError("a part to hash must be in a PartHasher.buffer");
    return this.ask({ buffer: part.buffer, byteOffset: part.byteOffset, length: part.length });
  }

  /** The SHA-256 (hex) of every part given, in order. */
  whole(): Promise<string> {
    return this.ask({});
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }

  private ask(message: object): Promise<string> {
    const id = this.nextId++;
    const answer = new Promise<string>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    answer.catch(() => undefined); // a hash nobody awaits any more (the upload failed) must not crash the agent
    this.worker.postMessage({ id, ...message });
    return answer;
  }

  private failAll(error: Error): void {
    for (const { reject } of this.waiting.values()) reject(error);
    this.waiting.clear();
  }
}
