import type { Context } from "hono";
import type { z } from "zod";
import { ApiError, badRequest } from "../errors";

export const MAX_BODY_BYTES = 16 * 1024;

/** A readable summary of what was wrong, naming fields but never echoing their values. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      if (issue.code === "unrecognized_keys") return `Unexpected field(s): ${issue.keys.join(", ")}.`;
      const field = issue.path.join(".");
      return field ? `${field}: ${issue.message}` : issue.message;
    })
    .join(" ");
}

export function parseWith<T extends z.ZodType>(schema: T, value: unknown): z.output<T> {
  const result = schema.safeParse(value);
  if (!result.success) throw badRequest("validation_failed", describeIssues(result.error));
  return result.data;
}

/** Parses a JSON request body strictly: right content type, well-formed, schema-valid. */
export async function readJson<T extends z.ZodType>(c: Context, schema: T): Promise<z.output<T>> {
  const type = c.req.header("content-type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new ApiError(415, "unsupported_media_type", "Send the body as application/json.");
  }
  let body: unknown;
  try {
    body = JSON.parse(await c.req.text());
  } catch {
    throw badRequest("invalid_json", "The request body is not valid JSON.");
  }
  return parseWith(schema, body);
}
