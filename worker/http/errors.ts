import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { ApiError } from "../errors";
import { logError } from "../logging";

export function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

/** The one place errors become responses: {"error": {"code", "message"}}. */
export function errorResponse(c: Context, err: Error): Response {
  if (err instanceof ApiError) {
    for (const [name, value] of Object.entries(err.headers)) c.header(name, value);
    return c.json(errorBody(err.code, err.message), err.status);
  }
  if (err instanceof HTTPException) {
    // Hono's own middleware (body limit and friends) throws these.
    const status = err.status as ContentfulStatusCode;
    const code = status === 413 ? "payload_too_large" : `http_${status}`;
    const message = status === 413 ? "The request body is too large." : err.message || "Request failed.";
    return c.json(errorBody(code, message), status);
  }
  // Unexpected: logged without its message (see logging.ts), answered generically.
  logError("unhandled_error", err);
  return c.json(errorBody("internal_error", "Something went wrong on our side."), 500);
}
