import agentReadme from "../../../agent/README.md?raw";
import dataExport from "../../../docs/data-export.md?raw";
import decisions from "../../../docs/decisions.md?raw";
import readme from "../../../README.md?raw";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { CHECK_IDS, PROMISE_CHECKS } from "../../../worker/checks/registry";
import { HOW_TOPICS, HOW_WE_KEEP_IT, type DocSection } from "../../../worker/pages/security-statements";
import { call, logIn, verifiedUser } from "../helpers";
import { runningServer } from "../servers/server-helpers";
import { expectLabelled } from "./page-checks";

// The public security page: the promises, each with how it is kept and, about a homeserver, the
// check that looks at it; held in step with the check registry and with the documents it cites.

const DOCS: Record<DocSection["doc"], string> = {
  "README.md": readme,
  "docs/decisions.md": decisions,
  "docs/data-export.md": dataExport,
  "agent/README.md": agentReadme,
};

const headingsOf = (markdown: string) => markdown.split("\n").flatMap((line) => /^#+ (.+)$/.exec(line)?.[1] ?? []);

/** Every test file in the repository, by its path from the root. */
const TEST_FILES = Object.keys(import.meta.glob("/test/**/*.test.{ts,tsx}")).map((path) => path.slice(1));

async function securityPage(path = "/security", cookie: string | null = null, status = 200): Promise<string> {
  const response = await call(path, { cookie, headers: { accept: "text/html" } });
  const html = await response.text();
  expect(response.status, html).toBe(status);
  expect(response.headers.get("content-type")).toMatch(/^text\/html/);
  return html;
}

interface RenderedStatement {
  id: string;
  about: string | null;
  check: string | null;
  links: string[];
}

/** The page's statements as a browser would find them: each `li.statement` with its marks and links. */
async function statementsOf(html: string): Promise<RenderedStatement[]> {
  const statements: RenderedStatement[] = [];
  await new HTMLRewriter()
    .on("li.statement", {
      element(element) {
        statements.push({
          id: element.getAttribute("id") ?? "",
          about: element.getAttribute("data-about"),
          check: element.getAttribute("data-check"),
          links: [],
        });
      },
    })
    .on("li.statement a", {
      element(element) {
        statements.at(-1)?.links.push(element.getAttribute("href") ?? "");
      },
    })
    .transform(new Response(html))
    .text();
  return statements;
}

describe("the security page", () => {
  it("is public: a visitor reads it without a session, and sees nobody's homeservers", async () => {
    const html = await securityPage();
    expect(html).toContain("<h1>Security</h1>");
    expect(html).not.toContain("Your homeservers");
    expect(html).not.toContain('href="/servers/');
    expect(html).not.toMatch(/<script/);
    expectLabelled(html);
  });

  it("shows a logged-in customer their own homeservers, linked to their pages, and no one else's", async () => {
    const mine = await runningServer();
    const theirs = await runningServer();
    const html = await securityPage("/security", mine.owner.cookie);
    expect(html).toContain("Your homeservers");
    expect(html).toContain(`href="/servers/${mine.id}"`);
    expect(html).not.toContain(theirs.id);

    const withoutServers = await securityPage("/security", await logIn((await verifiedUser()).email));
    expect(withoutServers).toContain("You have no homeserver yet.");
    expect(withoutServers).not.toContain('href="/servers/');
  });

  it("links each statement of a check that runs to the customer's own latest result of it, for each of their homeservers only", async () => {
    const mine = await runningServer();
    const theirs = await runningServer();
    const statements = await statementsOf(await securityPage("/security", mine.owner.cookie));
    for (const check of PROMISE_CHECKS) {
      const links = statements.find((statement) => statement.id === `check-${check.id}`)!.links;
      const ownResult = `/servers/${mine.id}/security#${check.id}`;
      // A check of custom server names only has no result for a homeserver named under our domain.
      if (check.customServerNamesOnly) expect(links, check.id).not.toContain(ownResult);
      else expect(links, check.id).toContain(ownResult);
      expect(links.join(" "), check.id).not.toContain(theirs.id);
    }
    await env.DB.prepare("UPDATE servers SET server_name = ? WHERE id = ?")
      .bind(`${mine.id.slice(0, 8)}.acme.test`, mine.id)
      .run();
    const named = await statementsOf(await securityPage("/security", mine.owner.cookie));
    for (const check of PROMISE_CHECKS) {
      expect(named.find((statement) => statement.id === `check-${check.id}`)!.links, check.id).toContain(`/servers/${mine.id}/security#${check.id}`);
    }
  });

  it("has a statement for every check, at the check's anchor, and every statement about a server names a check that exists", async () => {
    const html = await securityPage();
    const statements = await statementsOf(html);
    for (const check of PROMISE_CHECKS) {
      const statement = statements.find((candidate) => candidate.id === `check-${check.id}`);
      expect(statement, `no statement for the check ${check.id}`).toBeDefined();
      expect(statement!.check).toBe(check.id);
      expect(html).toContain(check.covers.replaceAll("'", "&#39;"));
    }
    for (const check of PROMISE_CHECKS.filter((candidate) => candidate.subject === "homeserver")) {
      expect(statements.find((statement) => statement.id === `check-${check.id}`)?.about, check.id).toBe("server");
    }
    for (const statement of statements.filter((candidate) => candidate.about === "server")) {
      expect(CHECK_IDS, `statement ${statement.id}`).toContain(statement.check);
    }
    for (const statement of statements) {
      expect(["server", "account", "service"]).toContain(statement.about);
      if (statement.check !== null) expect(CHECK_IDS, `statement ${statement.id}`).toContain(statement.check);
    }
    expect(new Set(statements.map((statement) => statement.id)).size).toBe(statements.length);
  });

  it("says how often each check runs, and claims none as not running", async () => {
    const html = await securityPage();
    const notes = html.match(/Checked every [a-z]+ [a-z ]+ \(check <code>[a-z-]+<\/code>\)/g) ?? [];
    expect(notes).toHaveLength(PROMISE_CHECKS.length);
    expect(html).not.toContain("not running yet");
    expect(html).not.toContain("we are building");
  });

  it("links every statement to a page on how it is kept, which answers and links back to it", async () => {
    const statements = await statementsOf(await securityPage());
    expect(statements.length).toBeGreaterThan(15);
    for (const statement of statements) {
      const how = statement.links.filter((link) => link.startsWith("/security/how/"));
      expect(how, `statement ${statement.id}`).toHaveLength(1);
      expect(await securityPage(how[0]), how[0]).toContain(`href="/security#${statement.id}"`);
    }
  });

  it("covers each part of the promise: encryption, infrastructure, payments, accounts, what we can and cannot see, what we will not do, legal requests", async () => {
    const html = await securityPage();
    for (const heading of [
      "Encryption",
      "Infrastructure",
      "Payments",
      "Your account",
      "What we can see, and what we cannot",
      "What we will not do with your data",
      "Legal requests",
    ]) {
      expect(html).toContain(`>${heading}</h2>`);
    }
  });

  it("cites, on each how-we-keep-it page, document sections and test files that exist", async () => {
    for (const topic of HOW_TOPICS) {
      const { sources, tests } = HOW_WE_KEEP_IT[topic];
      expect(sources.length, topic).toBeGreaterThan(0);
      for (const { doc, heading } of sources) expect(headingsOf(DOCS[doc]), `${doc} has no heading “${heading}”`).toContain(heading);
      for (const test of tests) expect(TEST_FILES, `${topic} cites ${test}`).toContain(test);
    }
  });

  it("answers an unknown how-we-keep-it topic with the page of an address with nothing at it", async () => {
    expect(await securityPage("/security/how/nothing", null, 404)).toContain("There is nothing at this address.");
    expect(await securityPage("/security/how/__proto__", null, 404)).toContain("There is nothing at this address.");
  });

  it("is linked from every page's footer and from the home page", async () => {
    const home = await securityPage("/");
    expect(home).toMatch(/<main[\s\S]*href="\/security"[\s\S]*<\/main>/);
    for (const path of ["/", "/login", "/signup", "/security", "/security/how/backups", "/no-such-page"]) {
      const response = await call(path, { headers: { accept: "text/html" } });
      expect(await response.text(), path).toMatch(/<footer class="site">[\s\S]*<a href="\/security">Security<\/a>[\s\S]*<\/footer>/);
    }
  });
});
