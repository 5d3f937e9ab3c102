import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { vi } from "vitest";

await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);

// A job's outcome reaches D1 through the host's Durable Object; beside the other test lane on the
// same cores that can take longer than vi.waitFor's default of 1 s, so waits default to 15 s.
const waitFor = vi.waitFor.bind(vi);
vi.waitFor = ((callback, options) =>
  waitFor(callback, typeof options === "number" ? options : { timeout: 15_000, interval: 50, ...options })) as typeof vi.waitFor;
