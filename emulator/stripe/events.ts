// Emission of events: each is built once, frozen as the exact JSON body that
// will be signed and delivered, and recorded. An Emitter lives for one action
// (an API call, a page submit, a control call), so its events form a batch.
import { newId } from "./ids.ts";
import { eventObject, snapshot } from "./objects.ts";
import type { Store, StoredEvent } from "./store.ts";
import { nowSeconds } from "./time.ts";

export interface RequestInfo {
  id: string | null;
  idempotency_key: string | null;
}

/** Events triggered without an API request (hosted pages, the passage of time). */
export const NO_REQUEST: RequestInfo = { id: null, idempotency_key: null };

function customerOf(object: object): string | null {
  const record = object as { object?: unknown; id?: unknown; customer?: unknown };
  if (record.object === "customer" && typeof record.id === "string") return record.id;
  return typeof record.customer === "string" ? record.customer : null;
}

export class Emitter {
  readonly emitted: StoredEvent[] = [];
  private readonly store: Store;
  private readonly request: RequestInfo;

  constructor(store: Store, request: RequestInfo) {
    this.store = store;
    this.request = request;
  }

  emit(type: string, object: object, previousAttributes?: Record<string, unknown>): void {
    const event = eventObject({
      id: newId("evt"),
      created: nowSeconds(),
      type,
      object: snapshot(object),
      previousAttributes: previousAttributes === undefined ? undefined : snapshot(previousAttributes),
      request: { ...this.request },
    });
    // Stripe sends pretty-printed JSON; receivers must verify these exact bytes.
    const stored: StoredEvent = { event, payload: JSON.stringify(event, null, 2), customer: customerOf(object) };
    this.store.events.push(stored);
    this.emitted.push(stored);
  }
}
