import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { ApiError } from "../errors";
import { logError } from "../logging";

export function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

/** What the caller is told about an error, as JSON or on a page. */
export interface ErrorAnswer {
  status: ContentfulStatusCode;
  code: string;
  message: string;
  headers: Record<string, string>;
}

/** The one place errors become answers; an unexpected one is logged without its message and answered generically. */
export function errorAnswer(err: Error): ErrorAnswer {
  if (err instanceof ApiError) return { status: err.status, code: err.code, message: err.message, headers: err.headers };
  if (err instanceof HTTPException) {
    // Hono's own middleware throws these.
    const status = err.status as ContentfulStatusCode;
    return { status, code: `http_${status}`, message: err.message || "Request failed.", headers: {} };
  }
  logError("unhandled_error", err);
  return { status: 500, code: "internal_error", message: "Something went wrong on our side.", headers: {} };
}

/** An error as the API answers it: {"error": {"code", "message"}}. */
export function errorResponse(c: Context, err: Error): Response {
  const answer = errorAnswer(err);
  for (const [name, value] of Object.entries(answer.headers)) c.header(name, value);
  return c.json(errorBody(answer.code, answer.message), answer.status);
}
