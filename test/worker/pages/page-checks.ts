import { expect } from "vitest";
import { call } from "../helpers";

/** Every id on the page is unique, and every field's id has its label (a duplicate id would send a label to the wrong field). */
export function expectLabelled(html: string) {
  const ids = [...html.matchAll(/\sid="([^"]+)"/g)].map(([, id]) => id!);
  expect(
    ids.filter((id, index) => ids.indexOf(id) !== index),
    "duplicate ids",
  ).toEqual([]);
  for (const [, id] of html.matchAll(/<(?:input|select|textarea) id="([^"]+)"/g)) expect(html).toContain(`<label for="${id}">`);
}

/** A page as a browser gets it: its HTML, once the status is `status` (the HTML shows when it is not). */
export async function page(path: string, cookie: string, status = 200): Promise<string> {
  const response = await call(path, { cookie, headers: { accept: "text/html" } });
  const html = await response.text();
  expect(response.status, html).toBe(status);
  expect(response.headers.get("content-type")).toMatch(/^text\/html/);
  return html;
}
