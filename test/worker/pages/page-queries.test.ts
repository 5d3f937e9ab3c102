import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call } from "../helpers";
import { recordD1 } from "../d1-queries";
import { operatorCookie } from "../fleet/fleet-helpers";
import { runningServer } from "../servers/server-helpers";

// How many D1 round trips a page view costs (its session's included), bounded so that a page that
// starts reading more fails here first. Measured with one homeserver on one host; the figures are
// recorded in docs/decisions.md ("Honest fleet benchmarks").

/**
 * The D1 round trips of one view of `path`. The recording sees the whole isolate, and a host's
 * Durable Object finishing earlier work can only add to it: the least of three views is the page's.
 */
async function queriesOf(path: string, cookie: string): Promise<number> {
  const counts: number[] = [];
  for (let view = 0; view < 3; view++) {
    const recording = recordD1();
    try {
      const response = await call(path, { cookie, headers: { accept: "text/html" } });
      expect(response.status, path).toBe(200);
      await response.text();
    } finally {
      recording.stop();
    }
    counts.push(recording.entries.filter((entry) => entry.kind === "query").length);
  }
  return Math.min(...counts);
}

describe("D1 queries per dashboard page, with one homeserver", () => {
  it("GET /servers: at most 9 (session; plan and servers together; room in each of 3 regions; the server's lifecycle job)", async () => {
    const { owner } = await runningServer();
    expect(await queriesOf("/servers", owner.cookie)).toBeLessThanOrEqual(9);
  });

  it("GET /servers/:id: at most 9 (session, the server, then its page's 7 independent reads sent together)", async () => {
    const { owner, id } = await runningServer();
    expect(await queriesOf(`/servers/${id}`, owner.cookie)).toBeLessThanOrEqual(9);
  });

  it("GET /servers/:id/security: at most 4 (session, the server, its checks' latest results and jobs)", async () => {
    const { owner, id } = await runningServer();
    expect(await queriesOf(`/servers/${id}/security`, owner.cookie)).toBeLessThanOrEqual(4);
  });

  it("GET /operator/hosts: at most 4 and 2 per host (session, hosts, certificates, failing checks; each host's homeservers and capacity used)", async () => {
    await runningServer();
    const operator = await operatorCookie();
    const hosts = (await env.DB.prepare("SELECT count(*) AS n FROM hosts").first<{ n: number }>())!.n;
    expect(await queriesOf("/operator/hosts", operator)).toBeLessThanOrEqual(4 + 2 * hosts);
  });
});
