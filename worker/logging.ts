import { DrizzleQueryError } from "drizzle-orm/errors";

/** What the logs may hold about an error. */
export interface LoggableError {
  class: string;
  /** Our ApiError's code, another error's `code`, or SQLite's result code (SQLITE_CONSTRAINT, …). */
  code?: string;
  /** A failed query's SQL: placeholders only, never its parameters. */
  query?: string;
  cause?: LoggableError;
}

const SQLITE_CODE = /\bSQLITE_[A-Z_]+\b/;
const CAUSE_DEPTH = 3;

/**
 * An error as it may be logged: never its message (nor its stack, which starts with it). A failed
 * query's message carries the query's parameters (password hashes, token hashes, wrapped keys,
 * emails), and other errors' messages can quote what a request sent; the class, the codes and the
 * SQL say what went wrong without them.
 */
export function loggableError(error: unknown, depth = 0): LoggableError {
  if (!(error instanceof Error)) return { class: typeof error };
  const described: LoggableError = { class: error.constructor.name || error.name };
  const ownCode = (error as { code?: unknown }).code;
  // D1 puts SQLite's result code at the end of its message: only that is taken from a message.
  const code = typeof ownCode === "string" ? ownCode : error instanceof DrizzleQueryError ? undefined : SQLITE_CODE.exec(error.message)?.[0];
  if (code) described.code = code;
  if (error instanceof DrizzleQueryError) described.query = error.query;
  if (error.cause !== undefined && depth < CAUSE_DEPTH) described.cause = loggableError(error.cause, depth + 1);
  return described;
}

/** Logs an unexpected error as one JSON line, with `detail` (ids, never request data) beside it. */
export function logError(event: string, error: unknown, detail: Record<string, string | number> = {}): void {
  console.error(JSON.stringify({ event, ...detail, error: loggableError(error) }));
}
