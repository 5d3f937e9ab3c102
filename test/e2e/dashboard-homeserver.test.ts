// A homeserver's own pages (users, registration, and the ones to come) in headless Chromium against
// their own `wrangler dev` (--no-agent), with JavaScript and without: this file plays the host's
// agent over a raw WebSocket, answering the administration jobs as a small homeserver would (or
// holding one, to show a job the page had to leave under way). Every page passes axe-core.
import { randomBytes, randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runningHomeserver } from "../job-results.ts";
import { reservePort } from "../ports.ts";
import { Api, DevServer, runCleanups, signUpOperator, tempRoot, waitFor, type RawSocket } from "./agent-helpers.ts";
import { axeSeriousViolations, axeSeriousViolationsWithoutScripts, launchChromium, submit } from "./browser-helpers.ts";
import { fakeAgent, jobOf, subscribedCustomer, type JobMessage } from "./dashboard-helpers.ts";

const artifacts = fileURLToPath(new URL("../../test-results/e2e/", import.meta.url));
const REGION = "us-west";

/** Every page of a homeserver, visited with and without JavaScript and checked by axe: a new page is one more line. */
const SERVER_PAGES: { name: string; path: (id: string) => string; heading: RegExp }[] = [
  { name: "Overview", path: (id) => `/servers/${id}`, heading: /^dash-/ },
  { name: "Users", path: (id) => `/servers/${id}/users`, heading: /^Users of / },
  { name: "Registration", path: (id) => `/servers/${id}/registration`, heading: /^Registration of / },
  { name: "Rooms", path: (id) => `/servers/${id}/rooms`, heading: /^Rooms of / },
  { name: "Settings", path: (id) => `/servers/${id}/settings`, heading: /^Settings of / },
  { name: "Security", path: (id) => `/servers/${id}/security`, heading: /^Security of / },
  { name: "Export", path: (id) => `/servers/${id}/export`, heading: /^Download your homeserver$/ },
];

interface HomeserverUser {
  userId: string;
  displayName: string | null;
  admin: boolean;
  deactivated: boolean;
  createdAt: number;
  lastSeenAt: number | null;
  devices: number;
  mediaBytes: number;
}

interface RegistrationToken {
  token: string;
  usesAllowed: number | null;
  pending: number;
  completed: number;
  expiresAt: number | null;
}

/** A homeserver's users, tokens, rooms and settings as its agent keeps them: each administration job answered as Synapse would, unless held. */
class PlayedHomeserver {
  readonly users = new Map<string, HomeserverUser>();
  readonly tokens = new Map<string, RegistrationToken>();
  /** A public room, shown by name, and a private one, shown by its id only. */
  readonly rooms = [
    { roomId: "!lobby:dash", public: true, name: "Lobby", canonicalAlias: "#lobby:dash", encryption: null, members: 40, localMembers: 12 },
    { roomId: "!secret:dash", public: false, name: null, canonicalAlias: null, encryption: "m.megolm.v1.aes-sha2", members: 3, localMembers: 3 },
  ].map((room) => ({ ...room, stateEvents: 20, createdAt: Date.now() - 86_400_000, blocked: false }));
  settings: unknown;
  private readonly held = new Set<string>();
  private readonly waiting: JobMessage["job"][] = [];
  private readonly answered = new Set<string>();

  constructor(
    private readonly agent: RawSocket,
    private readonly serverName: string,
  ) {
    agent.ws.on("message", (data) => {
      const message = JSON.parse(data.toString()) as Partial<JobMessage>;
      const job = message.type === "job" ? message.job : undefined;
      if (!job || !/^homeserver\.(users|registration_tokens|rooms|settings)\./.test(job.kind) || this.answered.has(job.id)) return;
      this.answered.add(job.id);
      if (this.held.has(job.kind)) this.waiting.push(job);
      else this.answer(job);
    });
  }

  /** Jobs of `kind` wait until released, as if the homeserver were slow. */
  hold(kind: string) {
    this.held.add(kind);
  }

  /** Answers the held jobs of `kind`, and those to come. */
  release(kind: string) {
    this.held.delete(kind);
    for (const job of this.waiting.splice(0)) this.answer(job);
  }

  heldCount() {
    return this.waiting.length;
  }

  private answer(job: JobMessage["job"]) {
    this.agent.ws.send(JSON.stringify({ type: "job.ack", id: job.id }));
    this.agent.ws.send(JSON.stringify({ type: "job.result", id: job.id, ok: true, result: this.resultOf(job) }));
  }

  private resultOf({ kind, payload }: JobMessage["job"]): unknown {
    const serverId = payload.serverId;
    switch (kind) {
      case "homeserver.users.list": {
        const search = String(payload.search ?? "");
        const users = [...this.users.values()].filter((user) => user.userId.includes(search) || (user.displayName ?? "").includes(search));
        return { users, total: users.length, nextFrom: null };
      }
      case "homeserver.users.create": {
        const userId = `@${payload.localpart}:${this.serverName}`;
        if (this.users.has(userId)) return { outcome: "taken", userId };
        const user = { userId, displayName: (payload.displayName as string) ?? null, admin: false, deactivated: false, createdAt: Date.now() };
        this.users.set(userId, { ...user, lastSeenAt: null, devices: 0, mediaBytes: 0 });
        return { outcome: "created", userId };
      }
      case "homeserver.users.update": {
        const user = this.users.get(String(payload.userId))!;
        if (payload.action === "make_admin") user.admin = true;
        if (payload.action === "unmake_admin") user.admin = false;
        if (String(payload.action).startsWith("deactivate")) user.deactivated = true;
        return { serverId, user, devicesLoggedOut: user.devices };
      }
      case "homeserver.registration_tokens.list":
        return { tokens: [...this.tokens.values()] };
      case "homeserver.registration_tokens.create": {
        const token = { token: randomBytes(12).toString("base64url"), usesAllowed: payload.usesAllowed as number, pending: 0, completed: 0 };
        this.tokens.set(token.token, { ...token, expiresAt: (payload.expiresAt as number | undefined) ?? null });
        return { outcome: "created", token: this.tokens.get(token.token) };
      }
      case "homeserver.registration_tokens.revoke":
        return { serverId, token: payload.token, revoked: this.tokens.delete(String(payload.token)) };
      case "homeserver.rooms.list":
        return { rooms: this.rooms, total: this.rooms.length, nextFrom: null };
      case "homeserver.rooms.block": {
        const room = this.rooms.find((candidate) => candidate.roomId === payload.roomId)!;
        room.blocked = payload.blocked as boolean;
        return { outcome: "done", roomId: room.roomId, blocked: room.blocked };
      }
      case "homeserver.settings.apply":
        this.settings = payload.settings;
        return { serverId, settings: payload.settings };
      default:
        throw new Error(`no answer for ${kind}`);
    }
  }
}

describe("a homeserver's pages in a real browser, with and without JavaScript", () => {
  let dev: DevServer;
  let browser: Browser;
  let homeserver: PlayedHomeserver;
  let serverId: string;
  let signedIn: Awaited<ReturnType<BrowserContext["storageState"]>>;

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    const root = tempRoot("berth-e2e-homeserver-pages-");
    dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"));
    await dev.start();
    const operator = new Api(dev.baseUrl);
    await signUpOperator(operator, dev);
    const agent = await fakeAgent(operator, REGION);
    browser = await launchChromium();

    // A customer with a running homeserver; both kinds of browser below share the session.
    const context = await browser.newContext();
    const page = await context.newPage();
    await subscribedCustomer(page, dev.baseUrl);
    const name = `dash-${randomUUID().slice(0, 8)}`;
    await page.getByLabel("Name", { exact: true }).fill(name);
    await page.getByRole("radio", { name: new RegExp(`${REGION} — has room`) }).check();
    await submit(page, page.getByRole("button", { name: "Create homeserver" }));
    serverId = new URL(page.url()).pathname.split("/").at(-1)!;
    const { job } = await jobOf(agent, "homeserver.provision");
    const serverName = String(job.payload.serverName);
    homeserver = new PlayedHomeserver(agent, serverName);
    const provisioned = { ...runningHomeserver(serverId, serverName), adminUserId: `@admin:${serverName}` };
    agent.ws.send(JSON.stringify({ type: "job.result", id: job.id, ok: true, result: provisioned }));
    const status = async () => ((await (await page.request.get(`${dev.baseUrl}/api/servers/${serverId}`)).json()) as { status: string }).status;
    await waitFor("the homeserver to be running", async () => (await status()) === "running", { timeoutMs: 15_000, intervalMs: 200 });
    signedIn = await context.storageState();
    await context.close();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await runCleanups();
  });

  describe.each([
    { javaScript: true, label: "with JavaScript" },
    { javaScript: false, label: "without JavaScript" },
  ])("$label", ({ javaScript, label }) => {
    let page: Page;
    const problems: string[] = [];
    const accessibilityProblems = () => (javaScript ? axeSeriousViolations(page) : axeSeriousViolationsWithoutScripts(browser, page));
    const shot = (step: string) => page.screenshot({ path: `${artifacts}dashboard-homeserver-${javaScript ? "js" : "nojs"}-${step}.png`, fullPage: true });

    beforeAll(async () => {
      const context = await browser.newContext({ javaScriptEnabled: javaScript, storageState: signedIn });
      page = await context.newPage();
      page.on("pageerror", (error) => problems.push(`pageerror at ${page.url()}: ${error.message}`));
      page.on("console", (message) => {
        // Pages answer a refusal with its status (a 409 for a taken name): the browser logs those.
        if (message.type() === "error" && !/status of 409/.test(message.text())) problems.push(`console.error at ${page.url()}: ${message.text()}`);
      });
    });

    it.each(SERVER_PAGES)("$name: the page, its navigation, and no serious accessibility violations", async ({ path, heading }) => {
      await page.goto(`${dev.baseUrl}${path(serverId)}`);
      expect(await page.getByRole("heading", { level: 1 }).innerText()).toMatch(heading);
      const nav = page.getByRole("navigation", { name: "Homeserver" });
      expect(await nav.getByRole("link").allInnerTexts()).toEqual(["Overview", "Users", "Registration", "Rooms", "Settings", "Security", "Export"]);
      expect(await nav.locator("[aria-current=page]").getAttribute("href")).toBe(path(serverId));
      expect(await accessibilityProblems()).toEqual([]);
    });

    it("creates a user, hands over the one-time link, makes a new one, and refuses a taken name keeping what was typed", async () => {
      const localpart = `user-${javaScript ? "js" : "nojs"}`;
      await page.goto(`${dev.baseUrl}/servers/${serverId}/users`);
      await page.getByLabel("Username").fill(localpart);
      await page.getByLabel("Display name (optional)").fill(`Someone ${label}`);
      await submit(page, page.getByRole("button", { name: "Create user" }));
      expect(await page.locator("main").innerText()).toMatch(new RegExp(`@${localpart}:\\S+ was created`));
      const created = page.locator("#password-link");
      expect(await created.getByRole("heading").innerText()).toMatch(new RegExp(`^@${localpart}:.+ was created$`));
      expect(new URL((await created.getByRole("link").getAttribute("href")) ?? "").pathname).toBe(`/homeservers/${serverId}/set-password`);
      expect(await created.innerText()).toContain("It works once and expires");
      expect(await accessibilityProblems()).toEqual([]);
      await shot("user-created");

      const card = page.getByRole("listitem").filter({ hasText: `@${localpart}:` });
      await card.getByText("Manage").click();
      await submit(page, card.getByRole("button", { name: "New password link" }));
      expect(await page.locator("#password-link").innerText()).toMatch(/A new password link for @.+every session @.+ has is logged out/s);

      await page.getByLabel("Username").fill(localpart);
      await page.getByLabel("Display name (optional)").fill("Typed again");
      await submit(page, page.getByRole("button", { name: "Create user" }));
      expect(await page.getByRole("alert").innerText()).toMatch(/exists already: choose another name/);
      expect(await page.getByLabel("Username").inputValue()).toBe(localpart);
      expect(await page.getByLabel("Display name (optional)").inputValue()).toBe("Typed again");
      expect(await accessibilityProblems()).toEqual([]);
    });

    it("creates a token that the homeserver is slow to make, shows it once done, and revokes it", async () => {
      await page.goto(`${dev.baseUrl}/servers/${serverId}/registration`);
      expect(await page.getByRole("link", { name: "Settings", exact: true }).last().getAttribute("href")).toBe(`/servers/${serverId}/settings`);
      homeserver.hold("homeserver.registration_tokens.create");
      await page.getByLabel("Uses allowed").fill("3");
      await page.getByLabel("Expires after (days, optional)").fill("7");
      await submit(page, page.getByRole("button", { name: "Create token" }));
      const underWay = page.locator("#job-pending");
      expect(await underWay.innerText()).toContain("Your homeserver is still creating the registration token.");
      expect(await accessibilityProblems()).toEqual([]);
      await shot("token-pending");
      expect(homeserver.heldCount()).toBe(1);
      homeserver.release("homeserver.registration_tokens.create");
      if (javaScript) {
        // The script follows the job and opens its outcome by itself.
        expect(await underWay.innerText()).toContain("this page shows the result by itself");
        await page.waitForURL(/[?&]job=/, { timeout: 15_000 });
      } else {
        await submit(page, underWay.getByRole("link", { name: "Check again" }));
      }
      await page.waitForLoadState("load");
      const token = (await page.locator("#created-token code").innerText()).trim();
      expect(homeserver.tokens.has(token)).toBe(true);
      expect(await page.locator("#created-token").innerText()).toMatch(/Registers up to 3 accounts, until /);
      expect(await page.getByRole("row").filter({ hasText: token }).innerText()).toMatch(/3\s+3\s+0/);
      expect(await accessibilityProblems()).toEqual([]);
      await shot("token-created");

      await submit(
        page,
        page
          .getByRole("row")
          .filter({ hasText: token })
          .getByRole("button", { name: `Revoke ${token}` }),
      );
      expect(await page.getByRole("status").first().innerText()).toContain(`The registration token ${token} is revoked`);
      expect(homeserver.tokens.has(token)).toBe(false);
      expect(problems).toEqual([]);
    });

    it("lists the rooms (a private one without its name), blocks one and unblocks it", async () => {
      await page.goto(`${dev.baseUrl}/servers/${serverId}/rooms`);
      const lobby = page.getByRole("row").filter({ hasText: "!lobby:dash" });
      expect(await lobby.innerText()).toContain("Lobby");
      const secret = page.getByRole("row").filter({ hasText: "!secret:dash" });
      expect(await secret.innerText()).toMatch(/Private room/);
      expect(await secret.innerText()).toContain("m.megolm.v1.aes-sha2");
      await submit(page, lobby.getByRole("button", { name: "Block" }));
      expect(await page.getByRole("status").first().innerText()).toContain("!lobby:dash is blocked");
      expect(homeserver.rooms[0]!.blocked).toBe(true);
      expect(await accessibilityProblems()).toEqual([]);
      await shot("room-blocked");
      await submit(page, page.getByRole("row").filter({ hasText: "!lobby:dash" }).getByRole("button", { name: "Unblock" }));
      expect(homeserver.rooms[0]!.blocked).toBe(false);
      expect(problems).toEqual([]);
    });

    it("sets registration to “by token” and federation off on the settings page", async () => {
      await page.goto(`${dev.baseUrl}/servers/${serverId}/settings`);
      await page.getByRole("radio", { name: /Anyone with a registration token/ }).check();
      await page.getByRole("radio", { name: /^Off/ }).check();
      await submit(page, page.getByRole("button", { name: "Save settings" }));
      expect(await page.getByRole("status").first().innerText()).toContain("Your homeserver runs with the new settings.");
      expect(homeserver.settings).toMatchObject({ registration: "token", federation: { mode: "off" } });
      expect(await page.getByRole("radio", { name: /Anyone with a registration token/ }).isChecked()).toBe(true);
      expect(await accessibilityProblems()).toEqual([]);
      await shot("settings-saved");
      // Back as it was, for the other pass.
      await page.getByRole("radio", { name: /^Nobody/ }).check();
      await page.getByRole("radio", { name: /^On —/ }).check();
      await submit(page, page.getByRole("button", { name: "Save settings" }));
      expect(homeserver.settings).toMatchObject({ registration: "closed", federation: { mode: "on" } });
      expect(problems).toEqual([]);
    });
  });
});
