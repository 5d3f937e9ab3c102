// Shared by the browser tests of a homeserver's pages against their own `wrangler dev` (--no-agent):
// a host's agent played over a raw WebSocket, and a customer who subscribes in the browser.
import { generateKeyPairSync, randomUUID, sign, type KeyObject } from "node:crypto";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { expect } from "vitest";
import { PROTOCOL_VERSION, helloSigningInput } from "../../protocol/messages.ts";
import { reservePort } from "../ports.ts";
import { Api, DevServer, openRaw, signUpOperator, tempRoot, waitFor, type RawSocket } from "./agent-helpers.ts";
import { launchChromium, newestTokenLink, submit } from "./browser-helpers.ts";

/** A host's agent played over a raw WebSocket, with what it signs its HTTP requests with. */
export interface FakeAgentSocket extends RawSocket {
  hostId: string;
  privateKey: KeyObject;
}

/** Enrolls a host in `region` with a fresh key and connects as its agent; the caller answers its jobs. */
export async function fakeAgent(api: Api, region: string): Promise<FakeAgentSocket> {
  const { token } = await api.expect<{ token: string }>(201, "POST", "/api/admin/join-tokens", { region });
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const raw = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
  const enrolled = await api.expect<{ hostId: string; connectUrl: string }>(201, "POST", "/api/agent/enroll", {
    joinToken: token,
    publicKey: raw.toString("base64url"),
    name: `e2e-dash-${randomUUID().slice(0, 8)}`,
    capacity: { memoryMiB: 8192, cpus: 4, diskGiB: 200 },
    agentVersion: "0.0.0-e2e-dashboard",
  });
  const socket = await openRaw(enrolled.connectUrl);
  const { nonce } = (await socket.next("challenge")) as { nonce: string };
  socket.ws.send(
    JSON.stringify({
      type: "hello",
      protocols: [PROTOCOL_VERSION],
      hostId: enrolled.hostId,
      nonce,
      signature: sign(null, Buffer.from(helloSigningInput(enrolled.hostId, nonce), "utf8"), privateKey).toString("base64url"),
      agentVersion: "0.0.0-e2e-dashboard",
      diskEncryption: { dataRoot: "/var/lib/berth", encrypted: false, devices: [], allowUnencrypted: true },
      workloads: [],
    }),
  );
  await socket.next("welcome");
  return Object.assign(socket, { hostId: enrolled.hostId, privateKey });
}

/** A `wrangler dev` of its own with an operator, one host in `region` played by the test, and a Chromium page (the caller closes the browser and runs the cleanups). */
export async function dashboardInstance(tempPrefix: string, region: string) {
  const root = tempRoot(tempPrefix);
  const dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"));
  await dev.start();
  const operator = new Api(dev.baseUrl);
  await signUpOperator(operator, dev);
  const agent = await fakeAgent(operator, region);
  const browser: Browser = await launchChromium();
  const page = await (await browser.newContext()).newPage();
  return { dev, agent, browser, page };
}

export interface JobMessage {
  type: "job";
  job: { id: string; kind: string; payload: Record<string, unknown> };
}

/** The first job of `kind` the host received whose id is not among `seen` (waits for it). */
export const jobOf = (socket: RawSocket, kind: string, seen: string[] = []) =>
  waitFor(
    `a ${kind} job`,
    () =>
      socket.messages.find(
        (m): m is JobMessage & Record<string, unknown> =>
          m.type === "job" && (m as unknown as JobMessage).job.kind === kind && !seen.includes((m as unknown as JobMessage).job.id),
      ),
    { timeoutMs: 30_000, intervalMs: 50 },
  );

/** A new customer, logged in on `page`, whose Starter subscription (through the Stripe emulator's Checkout) is active. */
export async function subscribedCustomer(page: Page, baseUrl: string): Promise<void> {
  const customer = new Api(baseUrl);
  const email = `dash-${randomUUID()}@example.com`;
  const password = `pass ${randomUUID()}`;
  await customer.expect(202, "POST", "/api/auth/signup", { email, password });
  const link = await newestTokenLink(baseUrl, email, "/verify-email");
  await customer.expect(200, "POST", "/api/auth/verify-email", { token: new URL(link).searchParams.get("token") });

  await page.goto(`${baseUrl}/login`);
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await submit(page, page.getByRole("main").getByRole("button", { name: "Log in", exact: true }));
  await page.goto(`${baseUrl}/billing`);
  await submit(page, page.getByRole("button", { name: "Subscribe to Starter" }));
  await page.getByLabel("Card number").fill("4242 4242 4242 4242");
  await page.getByLabel("Expiration (MM / YY)").fill("12 / 34");
  await page.getByLabel("CVC").fill("123");
  await page.getByLabel("Cardholder name").fill("Test Customer");
  await submit(page, page.getByRole("button", { name: "Subscribe" }));
  expect(new URL(page.url()).pathname).toBe("/billing/success");
  // The subscription arrives by webhook; then the servers page no longer asks for a plan.
  await waitFor(
    "the plan to be active",
    async () => {
      await page.goto(`${baseUrl}/servers`);
      return !(await page.locator("main").innerText()).includes("choose a plan");
    },
    { timeoutMs: 30_000, intervalMs: 300 },
  );
}
