import { env } from "cloudflare:workers";
import { expect, vi } from "vitest";
import { DAY, advance, call, logIn, post, runCron } from "../helpers";
import { deliverAll, emulatorControl, subscriber, takeDeliveries } from "../billing/stripe-helpers";
import { connectedAgent, enrolledHost, operatorCookie, succeeded, type FakeAgent } from "../fleet/fleet-helpers";
import type { presentServer } from "../../../worker/http/present";

// Homeservers as a customer and a fake agent drive them: shared by the servers and backups tests.

/** A server as the API presents it. */
export type ServerView = ReturnType<typeof presentServer>;
export interface JobMessage {
  type: "job";
  job: { id: string; kind: string; payload: Record<string, any>; attempt: number };
}

export const jobOf = (agent: FakeAgent, kind: string) => agent.next<JobMessage>((message) => message?.type === "job" && message.job.kind === kind);

export async function serverView(cookie: string, id: string): Promise<ServerView> {
  const response = await call(`/api/servers/${id}`, { cookie });
  expect(response.status).toBe(200);
  return response.json();
}

/** `GET /api/servers/:id/events` read as a browser's EventSource reads it. */
export async function serverEvents(cookie: string, id: string) {
  const response = await call(`/api/servers/${id}/events`, { cookie });
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return {
    /** The next `server` event, or null once the stream has ended. */
    async next(): Promise<ServerView | null> {
      for (;;) {
        const match = /event: server\ndata: (.*)\n\n/.exec(buffer);
        if (match) {
          buffer = buffer.slice(match.index + match[0].length);
          return JSON.parse(match[1]!) as ServerView;
        }
        const { value, done } = await reader.read();
        if (done) return null;
        buffer += value;
      }
    },
    cancel: () => reader.cancel(),
  };
}

export async function onlineHost(region = "us-east", memoryMiB?: number) {
  const host = await enrolledHost(await operatorCookie(), region);
  if (memoryMiB) await env.DB.prepare("UPDATE hosts SET memory_mib = ? WHERE id = ?").bind(memoryMiB, host.hostId).run();
  return { host, agent: await connectedAgent(host) };
}

export async function create(cookie: string, name = `hs-${crypto.randomUUID().slice(0, 8)}`, region = "us-east") {
  return post("/api/servers", { name, region }, { cookie });
}

/** A paying customer's homeserver, provisioned and running on a fresh host whose agent is connected. */
export async function runningServer() {
  const { agent, host } = await onlineHost();
  const owner = await subscriber();
  const created = (await (await create(owner.cookie)).json()) as ServerView;
  const { job } = await jobOf(agent, "homeserver.provision");
  agent.send(succeeded(job));
  await vi.waitFor(async () => expect((await serverView(owner.cookie, created.id)).status).toBe("running"));
  return { agent, host, owner, id: created.id };
}

/**
 * Billing suspends a running server: a renewal fails, the grace period passes, the cron turns that
 * into a suspend job and the agent does it. Returns a fresh session (the clock moved past the old one).
 */
export async function suspendedForNonPayment({ agent, owner, id }: Awaited<ReturnType<typeof runningServer>>): Promise<string> {
  await emulatorControl(`/_emulator/subscriptions/${owner.subscriptionId}/fail-payment`);
  await deliverAll(await takeDeliveries(owner.customerId));
  advance(8 * DAY);
  // The agent kept reporting meanwhile (moving the clock would otherwise look like silence).
  agent.send({ type: "inventory", workloads: [{ id, kind: "homeserver", state: "running" }] });
  await runCron();
  const suspend = await jobOf(agent, "homeserver.suspend");
  agent.send(succeeded(suspend.job));
  const cookie = await logIn(owner.email);
  await vi.waitFor(async () => expect((await serverView(cookie, id)).status).toBe("suspended"));
  return cookie;
}

/** A paying customer's homeserver whose Matrix server name is their own domain (`acme-<random>.test`), provisioned and running. */
export async function runningCustomNamedServer() {
  const { agent, host } = await onlineHost();
  const owner = await subscriber();
  const serverName = `acme-${crypto.randomUUID().slice(0, 8)}.test`;
  const response = await post("/api/servers", { name: `hs-${crypto.randomUUID().slice(0, 8)}`, region: "us-east", serverName }, { cookie: owner.cookie });
  expect(response.status).toBe(201);
  const created = (await response.json()) as ServerView;
  // It waits for its domain's well-knowns: the host finds them right, then sets it up.
  const check = await jobOf(agent, "homeserver.delegation_check");
  agent.send(succeeded(check.job));
  const { job } = await jobOf(agent, "homeserver.provision");
  agent.send(succeeded(job));
  await vi.waitFor(async () => expect((await serverView(owner.cookie, created.id)).status).toBe("running"));
  return { agent, host, owner, id: created.id, name: created.name, serverName };
}
