import { expect } from "vitest";

/** Every id on the page is unique, and every field's id has its label (a duplicate id would send a label to the wrong field). */
export function expectLabelled(html: string) {
  const ids = [...html.matchAll(/\sid="([^"]+)"/g)].map(([, id]) => id!);
  expect(
    ids.filter((id, index) => ids.indexOf(id) !== index),
    "duplicate ids",
  ).toEqual([]);
  for (const [, id] of html.matchAll(/<(?:input|select|textarea) id="([^"]+)"/g)) expect(html).toContain(`<label for="${id}">`);
}
