import type { Context } from "hono";
import type { HtmlEscapedString } from "hono/utils/html";
import { ApiError } from "../errors";
import type { AppEnv } from "./context";

// Server-rendered forms: each POST runs the same domain service as the JSON
// API, then redirects, or re-renders the form with the error and its status.

export type PageContext = Context<AppEnv>;

/** The string fields of a urlencoded or multipart form. */
export async function formFields(c: PageContext): Promise<Record<string, string>> {
  const body = await c.req.parseBody();
  return Object.fromEntries(Object.entries(body).filter((entry): entry is [string, string] => typeof entry[1] === "string"));
}

export async function handleForm(
  c: PageContext,
  action: () => Promise<Response>,
  renderError: (message: string) => HtmlEscapedString | Promise<HtmlEscapedString>,
): Promise<Response> {
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    for (const [name, value] of Object.entries(error.headers)) c.header(name, value);
    return c.html(renderError(error.message), error.status);
  }
}
