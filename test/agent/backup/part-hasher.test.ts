// The upload's hashing thread (agent/backup/part-hasher.ts): each part's SHA-256 and the whole's,
// read in place from shared memory, equal to hashing the same bytes here.
import { afterEach, expect, it } from "vitest";
import { PartHasher } from "../../../agent/backup/part-hasher.ts";
import { pseudoRandomBytes, sha256 } from "./helpers.ts";

let hasher: PartHasher | undefined;
afterEach(() => hasher?.close());

it("hashes each part, and the whole as the parts given in order, short and offset parts included", async () => {
  hasher = new PartHasher();
  const data = pseudoRandomBytes(3 * 65_536 + 5, "hasher");
  const buffer = PartHasher.buffer(data.length + 100);
  data.copy(buffer, 100);
  const parts = [buffer.subarray(100, 100 + 65_536), buffer.subarray(100 + 65_536, 100 + 3 * 65_536), buffer.subarray(100 + 3 * 65_536)];

  const hashes = await Promise.all(parts.map((part) => hasher!.part(part)));

  expect(hashes).toEqual(parts.map((part) => sha256(Buffer.from(part))));
  expect(await hasher.whole()).toBe(sha256(data));
});

it("refuses a part outside shared memory, which the thread could not read in place", () => {
  hasher = new PartHasher();
  expect(() => hasher!.part(Buffer.alloc(10))).toThrow(/PartHasher.buffer/);
});
