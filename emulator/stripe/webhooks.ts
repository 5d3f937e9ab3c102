// Signing and delivering events. With a webhook URL ("push") events are POSTed
// one at a time in emission order, each retried with backoff until it
// succeeds; without one ("hold") they wait to be collected through the
// control API. The signature is made fresh at each attempt, as Stripe does.
import { createHmac } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { StoredEvent } from "./store.ts";
import { nowSeconds } from "./time.ts";

export const MAX_ATTEMPTS = 6;
export const FIRST_RETRY_MS = 250;
const ATTEMPT_TIMEOUT_MS = 10_000;

/** The `Stripe-Signature` header for a payload: `t=<unix seconds>,v1=<hex HMAC-SHA256>`. */
export function signatureHeader(payload: string, secret: string, timestamp = nowSeconds()): string {
  const signature = createHmac("sha256", secret).update(`${timestamp}.${payload}`, "utf8").digest("hex");
  return `t=${timestamp},v1=${signature}`;
}

export interface DeliveryConfig {
  /** Every event is delivered twice: an action's events, then the same again. */
  duplicates: boolean;
  /** The events of one action are delivered in reverse order. */
  reverse: boolean;
  /** The first n attempts of each event count as failed without being sent. */
  failFirstAttempts: number;
}

export interface HeldDelivery {
  id: string;
  type: string;
  payload: string;
  signature: string;
}

interface Pending {
  stored: StoredEvent;
  skipAttempts: number;
}

export class Deliveries {
  readonly webhookUrl: string | undefined;
  private readonly secret: string;
  private readonly log: (line: string) => void;
  private config: DeliveryConfig = { duplicates: false, reverse: false, failFirstAttempts: 0 };
  private readonly queue: Pending[] = [];
  private readonly held: StoredEvent[] = [];
  private running = false;
  private idleWaiters: (() => void)[] = [];
  private readonly stop = new AbortController();

  constructor(options: { webhookUrl?: string; secret: string; log: (line: string) => void }) {
    this.webhookUrl = options.webhookUrl;
    this.secret = options.secret;
    this.log = options.log;
  }

  getConfig(): DeliveryConfig {
    return { ...this.config };
  }

  /** Changes how events emitted from now on are delivered. */
  setConfig(changes: Partial<DeliveryConfig>): DeliveryConfig {
    this.config = { ...this.config, ...changes };
    return this.getConfig();
  }

  /** Hands over the events one action emitted. */
  dispatch(events: StoredEvent[]): void {
    if (events.length === 0 || this.stop.signal.aborted) return;
    let batch = this.config.reverse ? [...events].reverse() : [...events];
    if (this.config.duplicates) batch = [...batch, ...batch];
    if (this.webhookUrl === undefined) {
      this.held.push(...batch);
      return;
    }
    for (const stored of batch) this.queue.push({ stored, skipAttempts: this.config.failFirstAttempts });
    if (!this.running) {
      this.running = true;
      void this.run();
    }
  }

  /** Held deliveries (all, or one customer's), removed as they are taken, signed now. */
  take(customer?: string): HeldDelivery[] {
    const taken: HeldDelivery[] = [];
    const timestamp = nowSeconds();
    for (let i = 0; i < this.held.length; ) {
      const stored = this.held[i]!;
      if (customer === undefined || stored.customer === customer) {
        this.held.splice(i, 1);
        taken.push({
          id: stored.event.id,
          type: stored.event.type,
          payload: stored.payload,
          signature: signatureHeader(stored.payload, this.secret, timestamp),
        });
      } else {
        i++;
      }
    }
    return taken;
  }

  /** Resolves once every queued delivery has been attempted to completion. */
  flush(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  close(): void {
    this.stop.abort();
    this.queue.length = 0;
  }

  private async run(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.stop.signal.aborted) {
        await this.deliver(this.queue[0]!);
        this.queue.shift();
      }
    } finally {
      this.running = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  private async deliver(pending: Pending): Promise<void> {
    const { event } = pending.stored;
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      if (this.stop.signal.aborted) return;
      const outcome =
        attempt <= pending.skipAttempts ? { delivered: false, detail: "failed (held back by failFirstAttempts)" } : await this.post(pending.stored);
      const retryMs = outcome.delivered || attempt === MAX_ATTEMPTS ? 0 : FIRST_RETRY_MS * 2 ** (attempt - 1);
      this.log(`webhook ${event.id} ${event.type} attempt ${attempt}: ${outcome.detail}${retryMs ? `; next attempt in ${retryMs} ms` : ""}`);
      if (outcome.delivered) return;
      if (retryMs) {
        try {
          await sleep(retryMs, undefined, { signal: this.stop.signal });
        } catch {
          return; // closed while waiting
        }
      }
    }
    this.log(`webhook ${event.id} ${event.type} dropped after ${MAX_ATTEMPTS} attempts`);
  }

  private async post(stored: StoredEvent): Promise<{ delivered: boolean; detail: string }> {
    try {
      const response = await fetch(this.webhookUrl!, {
        method: "POST",
        headers: {
          "Content-Type": "application/json; charset=utf-8",
          "Stripe-Signature": signatureHeader(stored.payload, this.secret),
          "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        },
        body: stored.payload,
        signal: AbortSignal.any([this.stop.signal, AbortSignal.timeout(ATTEMPT_TIMEOUT_MS)]),
      });
      await response.arrayBuffer().catch(() => undefined);
      return { delivered: response.ok, detail: `${response.ok ? "delivered" : "failed"} (HTTP ${response.status})` };
    } catch (error) {
      return { delivered: false, detail: `failed (${error instanceof Error ? error.message : String(error)})` };
    }
  }
}
