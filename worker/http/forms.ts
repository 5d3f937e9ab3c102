import type { Context } from "hono";
import type { HtmlEscapedString } from "hono/utils/html";
import { ApiError, badRequest } from "../errors";
import type { AppEnv } from "./context";

// Server-rendered forms: each POST runs the same domain service as the JSON
// API, then redirects, or re-renders the form with the error and its status.

// Generic in the env, so that pages behind requireLogin (which adds to it) use them too.
export type PageContext<E extends AppEnv = AppEnv> = Context<E>;

/** The string fields of a form, as far as they could be read (none when the body was not a form). */
export type FormFields = Record<string, string>;

type RenderError = (message: string) => HtmlEscapedString | Promise<HtmlEscapedString>;

const FORM_TYPES = new Set(["application/x-www-form-urlencoded", "multipart/form-data"]);

/**
 * A browser's form body: urlencoded or multipart. Anything else, and a body that does not parse
 * as its type says (a multipart body without its boundary, say), is the sender's mistake.
 * Files and repeated `name[]` fields are left out: our forms send only single text fields.
 */
async function readForm<E extends AppEnv>(c: PageContext<E>): Promise<FormFields> {
  const type = c.req.header("content-type")?.split(";")[0]?.trim().toLowerCase();
  if (!type || !FORM_TYPES.has(type)) {
    throw new ApiError(415, "unsupported_media_type", "This form must be sent from its page. Reload it and try again.");
  }
  let body: Record<string, unknown>;
  try {
    body = await c.req.parseBody();
  } catch {
    throw badRequest("invalid_form", "The form could not be read. Reload the page and send it again.");
  }
  return Object.fromEntries(Object.entries(body).filter((entry): entry is [string, string] => typeof entry[1] === "string"));
}

/** Runs a form's action; a refusal (an ApiError) re-renders the page with its message and status. */
export async function handleForm<E extends AppEnv>(c: PageContext<E>, action: () => Promise<Response>, renderError: RenderError): Promise<Response> {
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    for (const [name, value] of Object.entries(error.headers)) c.header(name, value);
    return c.html(renderError(error.message), error.status);
  }
}

/**
 * The one way a form's fields are read. A body that is not a readable form is refused before the
 * action (with a page saying so, from the app's error handler: there are no fields to refill);
 * the action's own refusals re-render its page with the fields sent.
 */
export async function submitForm<E extends AppEnv>(
  c: PageContext<E>,
  action: (fields: FormFields) => Promise<Response>,
  renderError: (message: string, fields: FormFields) => HtmlEscapedString | Promise<HtmlEscapedString>,
): Promise<Response> {
  const fields = await readForm(c);
  return handleForm(
    c,
    () => action(fields),
    (message) => renderError(message, fields),
  );
}

/** A datetime-local field, read as UTC (Unix ms); empty is no bound. What is wrong is added to `problems`. */
export function utcDateTime(value: string, label: string, problems: string[]): number | undefined {
  if (value.trim() === "") return undefined;
  const match = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.exec(value.trim());
  const at = match ? Date.parse(`${match[0]}${match[1] ? "" : ":00"}Z`) : Number.NaN;
  if (Number.isNaN(at)) problems.push(`${label} must be a date and time such as 2026-01-31T09:00.`);
  return Number.isNaN(at) ? undefined : at;
}
