// The test-control API under /_emulator/ (JSON, no auth; the emulator is a development tool bound
// to loopback, never part of the Worker): the zone's records as stored, the API requests made,
// and faults for the API's next requests.
import { z } from "zod";
import { findRoute, json, type Incoming, type Outgoing, type Route } from "../stripe/http.ts";
import type { Store } from "./store.ts";

type Handler = (store: Store, request: Incoming, params: Record<string, string>) => Outgoing;

const faultSchema = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("status"),
    status: z.union([z.literal(429), z.number().int().min(500).max(599)]),
    retryAfterSeconds: z.number().min(0).max(60).optional(),
    count: z.number().int().min(1).max(100).default(1),
  }),
  z.strictObject({ kind: z.literal("timeout"), count: z.number().int().min(1).max(100).default(1) }),
]);

const routes: Route<Handler>[] = [
  { method: "GET", pattern: "/_emulator/records", handle: (store) => json(200, [...store.records.values()]) },
  { method: "GET", pattern: "/_emulator/requests", handle: (store) => json(200, store.requests) },
  { method: "GET", pattern: "/_emulator/faults", handle: (store) => json(200, store.faults) },
  {
    method: "POST",
    pattern: "/_emulator/faults",
    handle: (store, request) => {
      const fault = faultSchema.parse(JSON.parse(request.body || "null"));
      store.faults.push(fault);
      return json(200, store.faults);
    },
  },
  {
    method: "DELETE",
    pattern: "/_emulator/faults",
    handle: (store) => {
      store.faults = [];
      return json(200, store.faults);
    },
  },
];

export function handleControl(request: Incoming, store: Store): Outgoing {
  const found = findRoute(routes, request);
  if (!found) return json(404, { error: `No control endpoint ${request.method} ${request.path}.` });
  try {
    return found.handle(store, request, found.params);
  } catch (error) {
    if (error instanceof SyntaxError || error instanceof z.ZodError) return json(400, { error: "The body must be a fault: {kind: status|timeout, …}." });
    throw error;
  }
}
