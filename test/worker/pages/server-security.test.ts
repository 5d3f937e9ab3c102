import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { PROMISE_CHECKS } from "../../../worker/checks/registry";
import { succeeded } from "../fleet/fleet-helpers";
import { call } from "../helpers";
import { jobOf, runningServer } from "../servers/server-helpers";
import { expectLabelled, page } from "./page-checks";

// A homeserver's Security tab, without JavaScript: every promise with its latest result in words,
// its evidence and history, and "check now" by plain POST.

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const securityPage = (id: string) => `/servers/${id}/security`;
const checkNow = (id: string, cookie: string | null) =>
  call(`${securityPage(id)}/check`, {
    method: "POST",
    rawBody: new URLSearchParams(),
    headers: { "content-type": "application/x-www-form-urlencoded" },
    cookie,
  });
const checkJobCount = async (id: string) =>
  (await env.DB.prepare("SELECT count(*) AS n FROM jobs WHERE server_id = ? AND kind = 'homeserver.checks'").bind(id).first<{ n: number }>())!.n;

describe("the Security tab", () => {
  it("asks for a log-in, and shows another customer's server as no server at all, running nothing", async () => {
    const server = await runningServer();
    const anonymous = await call(securityPage(server.id), { headers: { accept: "text/html" } });
    expect(anonymous.status).toBe(303);
    expect(anonymous.headers.get("location")).toBe("/login");
    const stranger = (await runningServer()).owner.cookie;
    const theirs = await page(securityPage(server.id), stranger, 404);
    expect(theirs).toBe(await page(securityPage(crypto.randomUUID()), stranger, 404));
    expect((await checkNow(server.id, stranger)).status).toBe(404);
    expect((await checkNow(server.id, null)).status).toBe(303);
    expect(await checkJobCount(server.id)).toBe(0);
  });

  it("lists every promise at its anchor, says none has a result yet, and runs the checks on 'Check now', showing results in words", async () => {
    const server = await runningServer();
    const cookie = server.owner.cookie;
    const before = await page(securityPage(server.id), cookie);
    expectLabelled(before);
    expect(before).not.toMatch(/<script/);
    expect(before).toContain('aria-current="page">Security</a>');
    for (const check of PROMISE_CHECKS) {
      // A check of custom server names only is not listed for a homeserver named under our domain.
      if (check.customServerNamesOnly) expect(before).not.toContain(`<section id="${check.id}"`);
      else expect(before).toContain(`<section id="${check.id}"`);
    }
    expect(before).toContain(`it runs every week; its first result shows here.`);
    expect(before).toContain(`it runs every day; its first result shows here.`);

    const started = await checkNow(server.id, cookie);
    expect(started.status).toBe(303);
    expect(started.headers.get("location")).toBe(`${securityPage(server.id)}?notice=checks_started`);
    const { job } = await jobOf(server.agent, "homeserver.checks");
    const running = await page(`${securityPage(server.id)}?notice=checks_started`, cookie);
    expect(running).toContain("The checks have started");
    expect(running).toContain("The checks are running now");

    const again = await checkNow(server.id, cookie);
    expect(again.status).toBe(409);
    expect(await again.text()).toContain("This homeserver&#39;s checks are running now");

    server.agent.send(succeeded(job));
    await vi.waitFor(async () => expect(await page(securityPage(server.id), cookie)).toContain("The isolation check holds."));
    const after = await page(securityPage(server.id), cookie);
    expect(after).toMatch(/<strong>Holds<\/strong>, checked [^<]{5,40}? UTC: The isolation check holds\./);
    expect(after).toMatch(/<strong>Could not check<\/strong>, checked [^<]{5,40}? UTC: No backup yet; the first is taken on/);
    expect(after).toContain("<dt>Checked by</dt><dd>the test agent</dd>");
    expect(after).toContain("The last 30 days");
    expectLabelled(after);
  });
});
