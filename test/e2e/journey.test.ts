// A customer's whole life with the product, in headless Chromium, through the pages alone: the
// product runs as `npm run dev` does with its real local agent (wrangler dev, the Stripe emulator,
// Caddy, and berth-agent running Synapse + PostgreSQL in Docker). The customer signs up, confirms
// the email from the dev mailbox, subscribes through the emulator's Checkout page, creates a
// homeserver by form and watches it reach "running" live (the page is never reloaded), sees its
// usage charted, backs it up and sees the backup succeed, sees every promise check hold on its
// Security tab (the first backup's restore verified in a sandbox), downloads the data export (every category
// of "what we can see", this server included, no secret), and deletes the account. Then the
// homeserver is gone from the host (a final backup first, then no containers and no data dir), and
// the old email and password no longer log in. Every page of ours passes axe-core with no serious or
// critical violation; a full-page screenshot of each step goes to test-results/e2e/journey/.
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { destroyDevHomeservers } from "../../scripts/dev-reset.mjs";
import { reservePort, reservePortPair } from "../ports.ts";
import { DevServer, Fatal, runCleanups, tempRoot, waitFor } from "./agent-helpers";
import { axeSeriousViolations, expectAt, launchChromium, newestTokenLink, pathOf, submit } from "./browser-helpers";
import { dockerLogsTail, requireHomeserverHost, run } from "./homeserver-helpers";

const artifacts = fileURLToPath(new URL("../../test-results/e2e/journey/", import.meta.url));
const SESSION_COOKIE = "__Host-berth_session";

const email = `journey-${randomUUID()}@example.com`;
const password = `journey pass ${randomBytes(12).toString("hex")}`;
const name = `jr-${randomBytes(4).toString("hex")}`;

let root: string;
let dev: DevServer;
let browser: Browser | undefined;
let context: BrowserContext;
let page: Page;
let serverId: string | undefined;
let shortId: string | undefined;
let serverName: string;
/** Files in the local R2 once the manual backup is done: the final backup adds to them. */
let r2FilesAfterBackup = 0;
/** Length of the dev log (the agent's JSON lines among it) when the account was deleted. */
let logAtDeletion = 0;
/** The status the server's page showed when it first came, just after the server was created. */
let statusAtLanding = "";
/** Navigations of the server's page since it first came (it must update itself instead). */
let navigations = 0;
const countNavigation = (frame: unknown) => {
  if (frame === page.mainFrame()) navigations++;
};
/** Once a step fails, the later ones (which build on it) are skipped. */
let broken = false;
/** Script errors on our pages; console errors are kept for the diagnostics. */
const pageErrors: string[] = [];
const consoleErrors: string[] = [];
const timings: string[] = [];
const started = Date.now();

function mark(what: string): void {
  timings.push(`${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s  ${what}`);
}

const shot = (file: string) => page.screenshot({ path: join(artifacts, `${file}.png`), fullPage: true });

/** Each distinct page of ours is checked with axe-core once, when first seen. */
const checkedPages = new Set<string>();
async function accessible(kind: string): Promise<void> {
  if (checkedPages.has(kind)) return;
  checkedPages.add(kind);
  expect(await axeSeriousViolations(page), `axe-core on the ${kind} page (${pathOf(page)})`).toEqual([]);
}

async function logInByForm(): Promise<void> {
  await page.goto(`${dev.baseUrl}/login`);
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await submit(page, page.getByRole("main").getByRole("button", { name: "Log in", exact: true }));
}

const heading = () => page.getByRole("heading", { level: 1 }).innerText();
const statusBadge = () => page.locator("#live-status [data-field=status]").innerText();
const liveStep = () => page.locator("#live-status [data-field=step]");
const nav = (label: string) => page.getByRole("navigation", { name: "Account" }).getByRole("link", { name: label, exact: true });
const dataDir = () => join(dev.agentDataRoot, "homeservers", serverId!);

/**
 * Scrolls the element with `id` into view for a screenshot, in one step inside the page: the page's
 * script may replace that part of the page at any moment (a job's progress), which fails a locator's
 * scroll that found the element before it was replaced.
 */
async function scrollTo(id: string): Promise<void> {
  await page.evaluate(`document.getElementById(${JSON.stringify(id)})?.scrollIntoView({ block: "start" })`);
}

async function containersOfServer(): Promise<string[]> {
  const listed = await run("docker", ["ps", "-a", "--format", "{{.Names}}"]);
  if (listed.code !== 0) throw new Error(`docker ps: ${listed.stderr.toString("utf8")}`);
  return listed.stdout
    .toString("utf8")
    .split("\n")
    .filter((line) => line.startsWith(`berth-${shortId}-`));
}

/** The agent's "job succeeded" lines in the dev log after `from`, as the kinds of job, in order. */
function agentJobsSucceeded(from: number): string[] {
  const kinds: string[] = [];
  for (const line of dev.log().slice(from).split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const entry = JSON.parse(line) as { msg?: string; kind?: string; serverId?: string };
      if (entry.msg === "job succeeded" && entry.kind) kinds.push(entry.kind);
    } catch {
      // not one of the agent's lines
    }
  }
  return kinds;
}

function filesUnder(dir: string): number {
  if (!existsSync(dir)) return 0;
  let count = 0;
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    count += statSync(path).isDirectory() ? filesUnder(path) : 1;
  }
  return count;
}

async function diagnostics(): Promise<string> {
  const parts = [`--- timings ---\n${timings.join("\n")}`];
  if (page) {
    parts.push(
      `--- the browser is at ${page.url()} ---\n${(
        await page
          .locator("body")
          .innerText()
          .catch(() => "(no page)")
      ).slice(0, 1500)}`,
    );
  }
  if (pageErrors.length || consoleErrors.length) parts.push(`--- browser errors ---\n${[...pageErrors, ...consoleErrors].join("\n")}`);
  if (shortId) {
    parts.push(`--- docker ps -a (this server) ---\n${(await containersOfServer().catch((error) => [String(error)])).join("\n")}`);
    parts.push(`--- docker logs --tail 60 berth-${shortId}-synapse ---\n${await dockerLogsTail(`berth-${shortId}-synapse`)}`);
    parts.push(`--- docker logs --tail 20 berth-${shortId}-postgres ---\n${await dockerLogsTail(`berth-${shortId}-postgres`, 20)}`);
  }
  if (dev) parts.push(`--- tail of the dev log (${dev.logFile}) ---\n${dev.logTail(100)}`);
  return parts.join("\n");
}

describe("a customer's journey in a real browser, with real homeservers on the local agent", () => {
  beforeAll(async () => {
    await requireHomeserverHost();
    // This run's screenshots only.
    rmSync(artifacts, { recursive: true, force: true });
    mkdirSync(artifacts, { recursive: true });

    root = tempRoot("berth-e2e-journey-");
    dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"), { httpsPort: await reservePortPair() });
    await dev.start();
    mark("dev server (Worker, Stripe emulator, Caddy, agent) answers");

    browser = await launchChromium();
    context = await browser.newContext();
    page = await context.newPage();
    page.on("pageerror", (error) => pageErrors.push(`pageerror at ${page.url()}: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      const at = new URL(page.url());
      const source = message.location().url;
      // Not ours: the Stripe emulator's page (its missing favicon).
      if (at.origin !== new URL(dev.baseUrl).origin) return;
      // Expected: the 401 of a refused log-in.
      if (at.pathname === "/login" && /status of 401/.test(message.text())) return;
      // Expected: a server page's event stream cut off when the browser leaves the page.
      if (/^net::ERR_/.test(message.text().replace(/^Failed to load resource: /, "")) && /\/events$/.test(new URL(source || page.url()).pathname)) return;
      consoleErrors.push(`console.error at ${page.url()} (${source}): ${message.text()}`);
    });
  }, 240_000);

  afterAll(async () => {
    await browser?.close().catch(() => undefined);
    await dev?.stop();
    // Whatever the journey left on the host (after a failed step) goes through the agent's own destroy path.
    if (dev) await destroyDevHomeservers(dev.persistTo).catch((error) => console.warn(`[journey e2e] cleanup failed: ${String(error)}`));
    await runCleanups();
    console.log(`[journey e2e] timings:\n${timings.join("\n")}`);
    if (consoleErrors.length) console.log(`[journey e2e] browser console errors:\n${consoleErrors.join("\n")}`);
  }, 240_000);

  beforeEach((ctx) => {
    if (broken) ctx.skip();
    ctx.onTestFailed(async () => {
      broken = true;
      await shot(`failed-${ctx.task.name.slice(0, 2)}`).catch(() => undefined);
      console.error(await diagnostics());
    });
  });

  it("01 signs up with the signup form", { timeout: 60_000 }, async () => {
    await page.goto(`${dev.baseUrl}/signup`);
    expect(await page.title()).toBe("Sign up · Berth");
    await accessible("signup");
    await page.getByLabel("Email", { exact: true }).fill(email);
    await page.getByLabel("Password", { exact: true }).fill(password);
    await submit(page, page.getByRole("button", { name: "Sign up", exact: true }));
    await expectAt(page, "/login?notice=signed_up");
    expect(await page.getByRole("status").innerText()).toContain("Check your inbox");
    await accessible("login");
    await shot("01-signed-up");
    mark("signed up");
  });

  it("02 confirms the email from the link in the dev mailbox", { timeout: 60_000 }, async () => {
    const link = await newestTokenLink(dev.baseUrl, email, "/verify-email");
    await page.goto(link);
    expect(await heading()).toBe("Confirm your email address");
    await accessible("verify-email landing");
    await submit(page, page.getByRole("button", { name: "Confirm my email" }));
    await expectAt(page, "/verify-email");
    expect(await heading()).toBe("Email confirmed");
    expect(await page.getByRole("status").innerText()).toBe("Your email address is confirmed.");
    await accessible("email confirmed");
    await shot("02-email-confirmed");
    mark("email confirmed");
  });

  it("03 logs in and subscribes: billing page, the emulator's Checkout page, back to billing", { timeout: 120_000 }, async () => {
    await logInByForm();
    await expectAt(page, "/account");
    await accessible("account");

    await nav("Billing").click();
    await page.waitForLoadState("load");
    await expectAt(page, "/billing");
    await accessible("billing (choose a plan)");
    await submit(page, page.getByRole("button", { name: "Subscribe to Starter" }));
    // Stripe's page (here the emulator's): not ours, so no axe-core.
    expect(new URL(page.url()).origin).not.toBe(new URL(dev.baseUrl).origin);
    await page.getByLabel("Card number").fill("4242 4242 4242 4242");
    await page.getByLabel("Expiration (MM / YY)").fill("12 / 34");
    await page.getByLabel("CVC").fill("123");
    await page.getByLabel("Cardholder name").fill("Journey Customer");
    await shot("03a-checkout");
    await submit(page, page.getByRole("button", { name: "Subscribe" }));
    expect(new URL(page.url()).pathname).toBe("/billing/success");
    expect(await heading()).toBe("Thank you");
    await accessible("checkout success");

    // The plan shows once Stripe's webhook has arrived.
    await submit(page, page.getByRole("link", { name: "Go to billing" }));
    await waitFor(
      "the billing page to show the active plan",
      async () => {
        if ((await page.getByRole("heading", { name: "Your plan" }).count()) > 0) return true;
        await page.reload();
        return false;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    const plan = page.getByRole("region", { name: "Your plan" });
    expect(await plan.innerText()).toMatch(/Starter/);
    expect(await plan.locator(".badge").innerText()).toBe("active");
    expect(await plan.innerText()).toContain("Your homeservers are running.");
    await accessible("billing (subscribed)");
    await shot("03-subscribed");
    mark("subscribed");
  });

  it("04 creates a homeserver with the form on the servers page", { timeout: 120_000 }, async () => {
    await nav("Servers").click();
    await page.waitForLoadState("load");
    await expectAt(page, "/servers");
    expect(await page.locator("main").innerText()).toContain("You have no homeserver yet.");
    await accessible("servers");
    // The local agent comes online a few seconds after the Worker: until then no region has room.
    await waitFor(
      "a region with room (the local agent online)",
      async () => {
        if ((await page.getByRole("radio", { name: /— has room/ }).count()) > 0) return true;
        await page.reload();
        return false;
      },
      { timeoutMs: 90_000, intervalMs: 1_000 },
    );
    const region = page.getByRole("radio", { name: /— has room/ }).first();
    await region.check();
    await page.getByLabel("Name", { exact: true }).fill(name);
    expect(await page.locator("#field-name-problem").innerText()).toBe("");
    await submit(page, page.getByRole("button", { name: "Create homeserver" }));
    const path = new URL(page.url()).pathname;
    if (!/^\/servers\/[0-9a-f-]{36}$/.test(path)) {
      expect.fail(`expected a server's page, at ${pathOf(page)}: ${(await page.locator("main").innerText()).slice(0, 500)}`);
    }
    serverId = path.slice("/servers/".length);
    shortId = serverId.replaceAll("-", "").slice(0, 12);
    serverName = await heading();
    expect(serverName).toBe(`${name}.berth.localhost`);
    // From here on the page is never reloaded: a marker that only survives if the document is never
    // replaced, and a count of navigations (step 05 checks both).
    await page.evaluate("window.__journeyMarker = 'not reloaded'");
    page.on("framenavigated", countNavigation);
    statusAtLanding = await statusBadge();
    await shot("04-created");
    mark(`server ${serverId} created (${statusAtLanding})`);
  });

  it("05 watches the server reach running on its page, which updates itself without a reload", { timeout: 300_000 }, async () => {
    // Setting up takes several seconds: the page came showing it (step 04), and may show anything
    // since, up to "running" already.
    const seen: string[] = [statusAtLanding];
    try {
      await waitFor(
        "the status to read running",
        async () => {
          const status = await statusBadge();
          const step = (await liveStep().isVisible()) ? await liveStep().innerText() : "";
          const now = `${status}${step ? ` — ${step}` : ""}`;
          if (seen.at(-1) !== now) {
            seen.push(now);
            mark(`page shows: ${now}`);
          }
          if (status === "failed") throw new Fatal(`the server failed: ${await page.locator("#live-status").innerText()}`);
          return status === "running";
        },
        { timeoutMs: 270_000, intervalMs: 250 },
      );
    } finally {
      page.off("framenavigated", countNavigation);
    }
    // The status changed on a page that was never reloaded nor replaced.
    expect(statusAtLanding).toBe("provisioning");
    expect(navigations).toBe(0);
    expect(await page.evaluate("window.__journeyMarker")).toBe("not reloaded");
    // The updates came over server-sent events, and the sections that depend on the state were refreshed in place.
    expect(await page.locator("#live-note").innerText()).toBe("This status updates by itself.");
    await expect.poll(() => page.getByRole("button", { name: "Stop", exact: true }).count(), { timeout: 15_000 }).toBe(1);
    expect(await page.locator("#live-status .badge").getAttribute("class")).toBe("badge ok");
    await accessible("server");
    await shot("05-running");
  });

  it("06 shows the server's CPU, memory and storage use in the usage charts once the agent has reported", { timeout: 240_000 }, async () => {
    const chart = (id: string) => ({
      summary: page.locator(`#${id}-summary`),
      line: page.locator(`figure[aria-labelledby="${id}-caption"] polyline`),
    });
    const charted = async (id: string) => {
      const { summary, line } = chart(id);
      const text = await summary.innerText();
      if (/no data/i.test(text)) return false;
      return (await line.count()) > 0 && ((await line.first().getAttribute("points")) ?? "").trim() !== "";
    };
    // The agent reports every 30 s; the page is reloaded (as a customer would) until the charts have it.
    await waitFor(
      "the CPU, memory and storage charts to have data",
      async () => {
        await page.reload();
        return (await charted("chart-cpu")) && (await charted("chart-memory")) && (await charted("chart-storage"));
      },
      { timeoutMs: 210_000, intervalMs: 5_000 },
    );
    expect(await chart("chart-cpu").summary.innerText()).toMatch(/^CPU: latest [\d.]+ %, average [\d.]+ %, peak [\d.]+ %\. Plan limit/);
    expect(await chart("chart-memory").summary.innerText()).toMatch(/^Memory: latest [\d.]+ [KMG]?B, average/);
    // The database alone takes tens of megabytes on disk; the bound is the storage quota the host mounted and reported.
    expect(await chart("chart-storage").summary.innerText()).toMatch(/^Stored: latest [\d.]+ MB, average .*\. Quota [\d.]+ GB\.$/);
    // One point per sample: an "x,y" pair each.
    for (const id of ["chart-cpu", "chart-memory", "chart-storage"]) {
      const points = ((await chart(id).line.first().getAttribute("points")) ?? "").trim().split(/\s+/);
      expect(points.length).toBeGreaterThan(0);
      for (const point of points) expect(point).toMatch(/^-?[\d.]+,-?[\d.]+$/);
    }
    await scrollTo("usage-heading");
    await shot("06-usage");
    mark("usage charted");
  });

  it("07 backs up now, follows the progress, and lists the backup as succeeded", { timeout: 300_000 }, async () => {
    expect(await page.locator("#backups").innerText()).toContain("No backups yet.");
    await submit(page, page.getByRole("button", { name: "Back up now" }));
    await expectAt(page, `/servers/${serverId}?notice=backup_started`);
    expect(await page.getByRole("status").innerText()).toBe("The backup has started.");
    mark("backup asked for");

    const steps = new Set<string>();
    let reloads = 0;
    let idleSince = 0;
    const row = page.locator("#backups tbody tr").first();
    const listed = await waitFor(
      "the backup to be listed as succeeded",
      async () => {
        if (await liveStep().isVisible()) {
          const step = await liveStep().innerText();
          if (!steps.has(step)) mark(`page shows: ${step}`);
          steps.add(step);
          idleSince = 0;
        }
        const text = (await row.count()) > 0 ? await row.innerText() : "";
        if (/\bfailed\b/.test(text)) throw new Fatal(`the backup failed: ${text}`);
        if (/\bsucceeded\b/.test(text)) return text;
        // Finished (nothing under way) but the list not yet refreshed: reload, as allowed once it is done.
        if (!(await liveStep().isVisible())) {
          idleSince ||= Date.now();
          if (Date.now() - idleSince > 10_000) {
            reloads++;
            idleSince = 0;
            await page.reload();
          }
        }
        return undefined;
      },
      { timeoutMs: 270_000, intervalMs: 250 },
    );
    mark(`backup listed: ${listed.replace(/\s+/g, " ")} (${reloads} reloads)`);
    // Its progress was shown while it ran.
    expect([...steps].some((step) => step.startsWith("Backing up"))).toBe(true);
    expect(listed).toMatch(/\bmanual\b/);
    // A size in bytes, not "—" nor "so far".
    expect(listed).toMatch(/\d+(\.\d)? [KMG]?B/);
    expect(listed).not.toContain("so far");
    expect(await statusBadge()).toBe("running");
    // A succeeded backup can be restored.
    await expect.poll(() => page.getByRole("button", { name: "Restore this backup" }).count(), { timeout: 15_000 }).toBe(1);
    await accessible("server (with a backup)");
    r2FilesAfterBackup = filesUnder(join(dev.persistTo, "v3", "r2"));
    // What step 10 sees go: the server's two containers and its data dir on the host.
    expect((await containersOfServer()).sort()).toEqual([`berth-${shortId}-postgres`, `berth-${shortId}-synapse`]);
    expect(existsSync(dataDir())).toBe(true);
    await scrollTo("backups-heading");
    await shot("07-backed-up");
  });

  it("08 sees every promise hold on the Security tab within minutes of the first backup, its restore verified; the development host's disk says it is not encrypted", {
    timeout: 300_000,
  }, async () => {
    await submit(page, page.getByRole("navigation", { name: "Homeserver" }).getByRole("link", { name: "Security" }));
    await expectAt(page, `/servers/${serverId}/security`);
    await submit(page, page.getByRole("button", { name: "Check now" }));
    await expectAt(page, `/servers/${serverId}/security?notice=checks_started`);
    mark("checks asked for");
    // Every check's latest result, by its section (the check's id); the first backup's restore verification runs by itself.
    const results = () =>
      page
        .locator("section.card")
        .evaluateAll((sections) =>
          Object.fromEntries(sections.map((section) => [section.id, section.querySelector(".check-result")?.textContent?.replace(/\s+/g, " ").trim() ?? ""])),
        );
    const latest = await waitFor(
      "a result of every check",
      async () => {
        await page.reload();
        const found = await results();
        return Object.values(found).every((text) => text !== "") ? found : undefined;
      },
      { timeoutMs: 240_000, intervalMs: 3_000 },
    );
    mark(`checks: ${JSON.stringify(latest)}`);
    const { "disk-encryption": disk, ...others } = latest;
    for (const [id, text] of Object.entries(others)) expect(text, id).toMatch(/^Holds, checked /);
    expect(Object.keys(others).sort()).toEqual(["backups", "card-data", "certificates", "encryption-by-default", "isolation", "restore-verified", "software"]);
    // An honest answer about the development host, not a pass.
    if (!disk?.startsWith("Holds")) expect(disk).toMatch(/^Fails, checked .*This is a development host/);
    expect(latest["restore-verified"]).toContain("restored in a throwaway sandbox");
    await accessible("server security tab");
    await shot("08-security");
    await page.goto(`${dev.baseUrl}/servers/${serverId}`);
  });

  it("09 downloads the data export from the account page: every category, this server included, no secret", { timeout: 60_000 }, async () => {
    await nav("Account").click();
    await page.waitForLoadState("load");
    await expectAt(page, "/account");
    const visibility = page.getByRole("region", { name: "What we can see" });
    const summary = await visibility.innerText();
    expect(summary).toContain(email);
    expect(summary).toContain(`${serverName}: running`);
    expect(summary).toMatch(/Subscription: active/);
    await accessible("account (with a server)");
    await shot("09-account");

    const [download] = await Promise.all([page.waitForEvent("download"), visibility.getByRole("link", { name: /Download/ }).click()]);
    expect(new URL(download.url()).pathname).toBe("/api/me/export");
    const raw = readFileSync((await download.path())!, "utf8");
    const data = JSON.parse(raw) as {
      exportedAt: string;
      cannotSee: string;
      account: { id: string; email: string; emailVerifiedAt: string | null; sessions: unknown[]; emailLinks: { purpose: string }[]; auditLog: unknown[] };
      billing: {
        stripeCustomerId: string | null;
        subscriptions: { plan: string; status: string }[];
        invoices: { status: string }[];
        entitlement: { state: string } | null;
      };
      usage: { serverId: string; samples: { cpuPercent: number; memoryBytes: number }[] }[];
      matrixMetadata: {
        servers: {
          id: string;
          name: string;
          serverName: string;
          status: string;
          synapseVersion: string | null;
          operations: { kind: string; status: string }[];
          backups: { trigger: string; status: string }[];
        }[];
      };
    };
    mark(`export downloaded (${raw.length} bytes)`);

    expect(Object.keys(data).sort()).toEqual(["account", "billing", "cannotSee", "exportedAt", "matrixMetadata", "usage"]);
    // Account info.
    expect(data.account.email).toBe(email);
    expect(data.account.emailVerifiedAt).not.toBeNull();
    expect(data.account.sessions.length).toBeGreaterThan(0);
    expect(data.account.emailLinks.map((link) => link.purpose).length).toBeGreaterThan(0);
    expect(data.account.auditLog.length).toBeGreaterThan(0);
    // Billing records.
    expect(data.billing.stripeCustomerId).toMatch(/^cus_/);
    expect(data.billing.subscriptions).toEqual([expect.objectContaining({ plan: "starter", status: "active" })]);
    expect(data.billing.entitlement).toMatchObject({ state: "active" });
    // Server-level resource usage, of this server.
    expect(data.usage.map((entry) => entry.serverId)).toEqual([serverId]);
    expect(data.usage[0]!.samples.length).toBeGreaterThan(0);
    expect(data.usage[0]!.samples[0]).toMatchObject({ cpuPercent: expect.any(Number), memoryBytes: expect.any(Number) });
    // Matrix metadata: this server, its operations and its backup.
    expect(data.matrixMetadata.servers).toHaveLength(1);
    const server = data.matrixMetadata.servers[0]!;
    expect(server).toMatchObject({ id: serverId, name, serverName, status: "running" });
    expect(server.synapseVersion).toMatch(/^\d+\.\d+/);
    expect(server.operations).toContainEqual(expect.objectContaining({ kind: "homeserver.provision", status: "succeeded" }));
    expect(server.backups).toEqual([expect.objectContaining({ trigger: "manual", status: "succeeded" })]);
    expect(data.cannotSee.length).toBeGreaterThan(0);

    // No secret: no field named like one, not the password, not the session cookie, no card data.
    const keys: string[] = [];
    const walk = (value: unknown): void => {
      if (Array.isArray(value)) value.forEach(walk);
      else if (value !== null && typeof value === "object") {
        for (const [key, item] of Object.entries(value)) {
          keys.push(key);
          walk(item);
        }
      }
    };
    walk(data);
    expect(keys.filter((key) => /hash|token|secret|session_?id|key|password|card|last4|brand|cvc/i.test(key))).toEqual([]);
    expect(raw).not.toContain(password);
    const cookie = (await context.cookies(dev.baseUrl)).find((candidate) => candidate.name === SESSION_COOKIE);
    expect(cookie).toBeDefined();
    expect(raw).not.toContain(cookie!.value);
    for (const part of cookie!.value.split(/[.~:]/).filter((piece) => piece.length >= 16)) expect(raw).not.toContain(part);
    expect(raw).not.toMatch(/4242\s?4242\s?4242\s?4242|\$argon2|\$scrypt|sk_test_|whsec_|BEGIN [A-Z ]*PRIVATE KEY|AGE-SECRET-KEY/);
  });

  it("10 deletes the account on the account page, confirmed with the password, and is told what was deleted and what is kept", {
    timeout: 60_000,
  }, async () => {
    const section = page.getByRole("region", { name: "Delete your account" });
    const terms = await section.innerText();
    expect(terms).toContain(`Your homeservers (${name}) are deleted: a final backup is taken first`);
    await section.getByLabel("Current password").fill(password);
    logAtDeletion = dev.log().length;
    await shot("10a-delete-confirm");
    await submit(page, section.getByRole("button", { name: "Delete my account" }));
    expect(await heading()).toBe("Your account is deleted");
    const main = await page.locator("main").innerText();
    expect(main).toContain("We emailed you a confirmation of what follows.");
    expect(main).toContain(`Your homeservers (${name}) are deleted: a final backup is taken first, then each is destroyed on its host.`);
    expect(main).toMatch(/Deleted now:[\s\S]*your subscription, cancelled at Stripe immediately[\s\S]*your email address and password/);
    expect(main).toMatch(/Kept:[\s\S]*final backup[\s\S]*your invoices[\s\S]*audit log/);
    expect(main).toMatch(/Everything else is destroyed by \d{4}-\d{2}-\d{2} at the latest\./);
    // The confirmation, in the dev mailbox, says the same.
    const mails = (await (await fetch(`${dev.baseUrl}/dev/mailbox.json?to=${encodeURIComponent(email)}`)).json()) as { subject: string; text: string }[];
    expect(mails[0]!.subject).toBe("Your Berth account was deleted");
    expect(mails[0]!.text).toContain(`Your homeservers (${name}) are being deleted: each takes a final backup, then its host destroys it.`);
    // Logged out with it.
    expect((await context.cookies(dev.baseUrl)).filter((cookie) => cookie.name === SESSION_COOKIE)).toEqual([]);
    await accessible("account deleted");
    await shot("10-account-deleted");
    mark("account deleted");
  });

  it("11 the homeserver is backed up a last time, then destroyed on the host: no containers, no data dir", { timeout: 300_000 }, async () => {
    await waitFor(
      `the containers berth-${shortId}-* and ${dataDir()} to be gone`,
      async () => (await containersOfServer()).length === 0 && !existsSync(dataDir()),
      { timeoutMs: 280_000, intervalMs: 1_000 },
    );
    mark("homeserver destroyed on the host");
    // The agent took the final backup, then destroyed the homeserver; the backup went to R2.
    await waitFor("the agent to log the delete job's success", () => agentJobsSucceeded(logAtDeletion).includes("homeserver.delete"), {
      timeoutMs: 30_000,
      intervalMs: 250,
    });
    const jobs = agentJobsSucceeded(logAtDeletion).filter((kind) => kind === "homeserver.backup" || kind === "homeserver.delete");
    expect(jobs).toEqual(["homeserver.backup", "homeserver.delete"]);
    expect(filesUnder(join(dev.persistTo, "v3", "r2"))).toBeGreaterThan(r2FilesAfterBackup);
    const networks = (await run("docker", ["network", "ls", "--format", "{{.Name}}"])).stdout.toString("utf8");
    expect(networks).not.toContain(`berth-${shortId}-`);
    await shot("11-destroyed");
  });

  it("12 the old email and password no longer log in: the form says so and stays on the login page", { timeout: 60_000 }, async () => {
    await logInByForm();
    await expectAt(page, "/login");
    expect(await page.getByRole("alert").innerText()).toBe("Email or password is incorrect.");
    expect(await page.getByLabel("Email", { exact: true }).inputValue()).toBe(email);
    expect((await context.cookies(dev.baseUrl)).filter((cookie) => cookie.name === SESSION_COOKIE)).toEqual([]);
    await accessible("login (refused)");
    await shot("12-login-refused");
    // No script error, CSP violation or failed load on any page of ours along the way.
    expect(pageErrors).toEqual([]);
    expect(consoleErrors).toEqual([]);
  });
});
