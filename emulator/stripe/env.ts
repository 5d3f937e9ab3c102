// What every router needs, and how an action's events reach delivery.
import type { Context } from "./billing.ts";
import { Emitter, type RequestInfo } from "./events.ts";
import type { Store } from "./store.ts";
import type { Deliveries } from "./webhooks.ts";

export interface Env {
  store: Store;
  deliveries: Deliveries;
  publicUrl: string;
}

/**
 * Runs one action (an API call, a page submit, a control call) and hands the
 * events it emitted to delivery as one batch, before the caller answers, so a
 * flush that follows the answer waits for them.
 */
export function act<T>(env: Env, request: RequestInfo, run: (ctx: Context) => T): T {
  const emitter = new Emitter(env.store, request);
  try {
    return run({ store: env.store, emitter, publicUrl: env.publicUrl });
  } finally {
    env.deliveries.dispatch(emitter.emitted);
  }
}
