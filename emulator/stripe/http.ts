// The small HTTP vocabulary the routers share: a parsed request in, a
// response value out, so handlers stay free of node:http details.
import type { IncomingHttpHeaders } from "node:http";

export interface Incoming {
  method: string;
  path: string;
  query: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface Outgoing {
  status: number;
  headers: Record<string, string>;
  body: string | Uint8Array;
}

export function json(status: number, value: unknown, headers: Record<string, string> = {}): Outgoing {
  return { status, headers: { "Content-Type": "application/json; charset=utf-8", ...headers }, body: JSON.stringify(value, null, 2) };
}

export function html(status: number, body: string): Outgoing {
  return { status, headers: { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" }, body };
}

export function redirect(location: string): Outgoing {
  return { status: 303, headers: { Location: location }, body: "" };
}

export function header(request: Incoming, name: string): string | undefined {
  const value = request.headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/** Matches `/v1/customers/:id` style patterns; returns the named segments. */
export function match(pattern: string, path: string): Record<string, string> | null {
  const want = pattern.split("/");
  const have = path.split("/");
  if (want.length !== have.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    const segment = want[i]!;
    const actual = have[i]!;
    if (segment.startsWith(":")) {
      if (actual === "") return null;
      try {
        params[segment.slice(1)] = decodeURIComponent(actual);
      } catch {
        return null;
      }
    } else if (segment !== actual) {
      return null;
    }
  }
  return params;
}

export interface Route<H> {
  method: string;
  pattern: string;
  handle: H;
}

export function findRoute<H>(routes: Route<H>[], request: Incoming): { handle: H; params: Record<string, string> } | null {
  for (const route of routes) {
    if (route.method !== request.method) continue;
    const params = match(route.pattern, request.path);
    if (params) return { handle: route.handle, params };
  }
  return null;
}
