// The test job kinds every agent understands: noop, sleep, fail.
import { z } from "zod";
import { JobInputError, type JobHandler } from "./types.ts";

export const MAX_SLEEP_MS = 10 * 60 * 1000;

export const noop: JobHandler = async () => ({ ok: true });

const sleepPayload = z.strictObject({ ms: z.number().int().min(0).max(MAX_SLEEP_MS) });

/** Waits `ms`, reporting progress about ten times; stops at once when aborted. */
export const sleep: JobHandler = async (payload, ctx) => {
  const parsed = sleepPayload.safeParse(payload);
  if (!parsed.success) throw new JobInputError(`sleep wants {"ms": 0…${MAX_SLEEP_MS}}: ${parsed.error.issues[0]?.message}`);
  const { ms } = parsed.data;
  const step = Math.max(10, Math.ceil(ms / 10));
  const started = Date.now();
  for (;;) {
    const elapsed = Date.now() - started;
    if (elapsed >= ms) break;
    ctx.progress(elapsed / Math.max(ms, 1), `slept ${elapsed} of ${ms} ms`);
    await abortableDelay(Math.min(step, ms - elapsed), ctx.signal);
  }
  ctx.progress(1, `slept ${ms} ms`);
  return { sleptMs: ms };
};

const failPayload = z.strictObject({ message: z.string().max(2000).optional() }).optional();

/** Always fails, with the payload's message. */
export const fail: JobHandler = async (payload) => {
  const parsed = failPayload.safeParse(payload ?? undefined);
  throw new Error(parsed.success && parsed.data?.message ? parsed.data.message : "failed on request (fail job)");
};

export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
