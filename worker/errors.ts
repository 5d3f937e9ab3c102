// Errors the domain raises for the caller to see. The HTTP layer maps each to
// {"error": {"code", "message"}} with its status; nothing here knows about HTTP frameworks.
export type ErrorStatus = 400 | 401 | 403 | 404 | 409 | 410 | 411 | 413 | 415 | 426 | 429 | 502 | 503 | 504;

export class ApiError extends Error {
  constructor(
    readonly status: ErrorStatus,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (code: string, message: string) => new ApiError(400, code, message);
export const unauthorized = (message = "You need to log in.") => new ApiError(401, "unauthorized", message);
export const forbidden = (code: string, message: string) => new ApiError(403, code, message);
export const notFound = (message = "Not found.") => new ApiError(404, "not_found", message);
export const conflict = (code: string, message: string) => new ApiError(409, code, message);
/** It was here and is gone for good (deleted on schedule): asking again will not bring it back. */
export const gone = (code: string, message: string) => new ApiError(410, code, message);
/** A service we depend on (Stripe) failed: nothing was changed. */
export const badGateway = (code: string, message: string) => new ApiError(502, code, message);
/** A peer we wait on (a host's agent) did not answer in time. */
export const gatewayTimeout = (code: string, message: string) => new ApiError(504, code, message);

export function tooManyRequests(retryAfterSeconds: number, message = `Too many attempts. Try again in ${retryAfterSeconds} seconds.`): ApiError {
  return new ApiError(429, "rate_limited", message, {
    "Retry-After": String(retryAfterSeconds),
  });
}
