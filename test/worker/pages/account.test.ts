import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { call, PASSWORD, post } from "../helpers";
import { runningServer } from "../servers/server-helpers";
import { expectLabelled } from "./page-checks";

// The account page's "what we can see" and account deletion, without JavaScript.

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const formHeaders = { "content-type": "application/x-www-form-urlencoded", accept: "text/html" };
const submit = (path: string, fields: Record<string, string>, cookie: string) =>
  call(path, { method: "POST", rawBody: new URLSearchParams(fields), headers: formHeaders, cookie });

describe("the account page", () => {
  it("shows what we can see, category by category with this customer's data, beside what we cannot; and what deletion does", async () => {
    const { owner, id } = await runningServer();
    const response = await call("/account", { cookie: owner.cookie, headers: { accept: "text/html" } });
    const html = await response.text();
    expect(response.status).toBe(200);
    expect(html).toContain("We cannot see the contents of end-to-end-encrypted rooms.");
    for (const category of ["Account info", "Billing records", "Server-level resource usage", "Matrix metadata"])
      expect(html).toContain(`<dt>${category}</dt>`);
    expect(html).toContain(owner.email);
    expect(html).toMatch(/Subscription: active \(starter\)/);
    const serverName = (await env.DB.prepare("SELECT name FROM servers WHERE id = ?").bind(id).first<{ name: string }>())!.name;
    expect(html).toContain(`${serverName}.`);
    expect(html).toContain('href="/api/me/export"');
    expect(html).toMatch(/Your homeservers \([^)]*\) are deleted: a final backup is taken first/);
    expect(html).toContain('action="/account/delete"');
    // Three forms ask for the current password: each box has its own label.
    expectLabelled(html);
  });

  it("deletion: a wrong password is refused on the page and deletes nothing; the right one deletes, says what follows, and ends the session", async () => {
    const { owner } = await runningServer();
    const refused = await submit("/account/delete", { password: "not my password" }, owner.cookie);
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain("What we can see");
    expect((await call("/api/me", { cookie: owner.cookie })).status).toBe(200);

    const deleted = await submit("/account/delete", { password: PASSWORD }, owner.cookie);
    const html = await deleted.text();
    expect(deleted.status, html).toBe(200);
    expect(html).toContain("Your account is deleted");
    expect(html).toMatch(/invoices/);
    expect(deleted.headers.get("set-cookie")).toMatch(/Max-Age=0/i);
    expect((await call("/api/me", { cookie: owner.cookie })).status).toBe(401);
    expect((await post("/api/auth/login", { email: owner.email, password: PASSWORD })).status).toBe(401);
  });
});
