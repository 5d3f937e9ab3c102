// `npm run operator -- grant|revoke <email>` (scripts/operator.mjs) against a local D1 of its own
// (no dev server): only an account whose email address is verified can be made an operator.
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT, runCleanups, tempRoot } from "./agent-helpers";

const OPERATOR_SCRIPT = join(REPO_ROOT, "scripts", "operator.mjs");
const WRANGLER = join(dirname(createRequire(import.meta.url).resolve("wrangler/package.json")), "bin", "wrangler.js");

let persistTo: string;

/** Runs a Node script to its exit; `onStderr` sees its stderr so far each time more arrives. */
function node(args: string[], onStderr?: (stderr: string) => void): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      process.execPath,
      args,
      { cwd: REPO_ROOT, timeout: 120_000, env: { ...process.env, FORCE_COLOR: "0", WRANGLER_SEND_METRICS: "false", CI: "true" } },
      (error, stdout, stderr) => {
        if (error && typeof error.code !== "number") return reject(new Error(`${args.join(" ")}: ${String(error)} ${stderr}`));
        resolve({ code: error ? Number(error.code) : 0, stdout, stderr });
      },
    );
    let stderrSoFar = "";
    child.stderr?.on("data", (chunk: Buffer | string) => {
      stderrSoFar += String(chunk);
      onStderr?.(stderrSoFar);
    });
  });
}

async function sql(command: string): Promise<Record<string, unknown>[]> {
  const result = await node([WRANGLER, "d1", "execute", "DB", "--local", "--persist-to", persistTo, "--json", "--command", command]);
  expect(result.code, result.stderr + result.stdout).toBe(0);
  return (JSON.parse(result.stdout) as { results?: Record<string, unknown>[] }[]).flatMap((statement) => statement.results ?? []);
}

const operator = (action: string, email: string, onStderr?: (stderr: string) => void) =>
  node([OPERATOR_SCRIPT, action, email, "--persist-to", persistTo], onStderr);
const roleOf = async (email: string) => (await sql(`SELECT role FROM users WHERE email = '${email}'`))[0]?.role;

afterAll(runCleanups);

describe("npm run operator", () => {
  beforeAll(async () => {
    persistTo = join(tempRoot("berth-e2e-operator-"), "state");
    const migrated = await node([WRANGLER, "d1", "migrations", "apply", "DB", "--local", "--persist-to", persistTo]);
    expect(migrated.code, migrated.stderr + migrated.stdout).toBe(0);
    const now = Date.now();
    await sql(
      "INSERT INTO users (id, email, email_verified_at, password_hash, role, created_at, updated_at) VALUES " +
        `('u-verified', 'verified@example.com', ${now}, 'x', 'customer', ${now}, ${now}), ` +
        `('u-unverified', 'unverified@example.com', NULL, 'x', 'customer', ${now}, ${now})`,
    );
  }, 180_000);

  it("makes a verified account an operator, and back", { timeout: 120_000 }, async () => {
    const granted = await operator("grant", "verified@example.com");
    expect(granted.code, granted.stderr).toBe(0);
    expect(granted.stdout).toContain("verified@example.com is now an operator.");
    expect(await roleOf("verified@example.com")).toBe("operator");

    const revoked = await operator("revoke", "verified@example.com");
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(await roleOf("verified@example.com")).toBe("customer");
  });

  it("refuses an account whose email address is not verified, saying so, and changes nothing", { timeout: 120_000 }, async () => {
    const refused = await operator("grant", "unverified@example.com");
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("unverified@example.com has not verified its email address");
    expect(await roleOf("unverified@example.com")).toBe("customer");
  });

  it("waits while a dev server holds the same database, then grants", { timeout: 120_000 }, async () => {
    const dir = join(persistTo, "v3", "d1", "miniflare-D1DatabaseObject");
    const file = readdirSync(dir).find((name) => name.endsWith(".sqlite") && name !== "metadata.sqlite");
    const holder = new DatabaseSync(join(dir, file!));
    holder.exec("BEGIN EXCLUSIVE");
    const release = () => {
      if (!holder.isOpen) return;
      holder.exec("COMMIT");
      holder.close();
    };
    // Held until the script says it is waiting (however long its start takes), then let go.
    const granted = await operator("grant", "verified@example.com", (stderr) => {
      if (stderr.includes("The local database is busy")) release();
    }).finally(release);
    expect(granted.code, granted.stderr + granted.stdout).toBe(0);
    expect(granted.stderr).toContain("The local database is busy (is the dev server writing?); trying again for up to 10 s.");
    expect(await roleOf("verified@example.com")).toBe("operator");
    expect((await operator("revoke", "verified@example.com")).code).toBe(0);
  });

  it("refuses an address without an account", { timeout: 120_000 }, async () => {
    const refused = await operator("grant", "nobody@example.com");
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("No account with the email nobody@example.com");
  });
});
