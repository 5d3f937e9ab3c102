// The test job kinds every agent understands: noop, sleep, fail.
import type { JobHandlers } from "./types.ts";

export const testHandlers: JobHandlers<"noop" | "sleep" | "fail"> = {
  noop: async () => ({ ok: true }),

  /** Waits `ms`, reporting progress about ten times; stops at once when aborted. */
  sleep: async ({ ms }, ctx) => {
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
  },

  /** Always fails, with the payload's message. */
  fail: async (payload) => {
    throw new Error(payload?.message || "failed on request (fail job)");
  },
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
