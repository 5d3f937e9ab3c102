// scripts/local-d1.mjs: `npm run dev` applies the local D1 migrations itself, in one runtime,
// to the same database and bookkeeping as `wrangler d1 migrations apply DB --local`: either one
// finds nothing left to do after the other, and a migration that fails leaves nothing of itself.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { applyLocalMigrations, localDatabase, migrationStatements } from "../../scripts/local-d1.mjs";

const root = fileURLToPath(new URL("../../", import.meta.url));
const wrangler = join(dirname(createRequire(import.meta.url).resolve("wrangler/package.json")), "bin", "wrangler.js");
const temp = mkdtempSync(join(tmpdir(), "berth-local-d1-"));
afterAll(() => rmSync(temp, { recursive: true, force: true }));

const migrationNames = () =>
  readdirSync(join(root, "migrations"))
    .filter((name) => name.endsWith(".sql"))
    .sort();

function wranglerApply(projectRoot: string, persistTo: string): string {
  const result = spawnSync(process.execPath, [wrangler, "d1", "migrations", "apply", "DB", "--local", "--persist-to", persistTo], {
    cwd: projectRoot,
    env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false", NO_UPDATE_NOTIFIER: "1", FORCE_COLOR: "0" },
    encoding: "utf8",
    timeout: 120_000,
  });
  expect(result.status, result.stderr).toBe(0);
  return result.stdout;
}

describe("npm run dev's local D1 migrations", () => {
  it("reads wrangler.toml's database id and migrations directory", () => {
    expect(localDatabase(root)).toEqual({ id: "00000000-0000-0000-0000-000000000000", migrationsDir: join(root, "migrations") });
  });

  it("splits a migration at drizzle-kit's breakpoints, dropping pieces with no statement", () => {
    const sql = "CREATE TABLE a (x text);\n--> statement-breakpoint\nCREATE INDEX a_x ON a (x);\n--> statement-breakpoint\n-- nothing here\n";
    expect(migrationStatements(sql)).toEqual(["CREATE TABLE a (x text);", "CREATE INDEX a_x ON a (x);"]);
  });

  it("applies every migration to a fresh state directory, after which wrangler finds none to apply", async () => {
    const persistTo = join(temp, "fresh");
    expect(await applyLocalMigrations({ root, persistTo })).toEqual(migrationNames());
    expect(await applyLocalMigrations({ root, persistTo })).toEqual([]);
    expect(wranglerApply(root, persistTo)).toContain("No migrations to apply");
  });

  it("applies nothing to a state directory wrangler migrated, and only what is new after that", async () => {
    const project = join(temp, "project");
    mkdirSync(join(project, "migrations"), { recursive: true });
    copyFileSync(join(root, "wrangler.toml"), join(project, "wrangler.toml"));
    copyFileSync(join(root, "migrations", "0000_init.sql"), join(project, "migrations", "0000_init.sql"));
    const persistTo = join(temp, "by-wrangler");
    wranglerApply(project, persistTo);
    expect(await applyLocalMigrations({ root: project, persistTo })).toEqual([]);

    writeFileSync(join(project, "migrations", "0001_more.sql"), "CREATE TABLE more (x text);\n--> statement-breakpoint\nCREATE INDEX more_x ON more (x);\n");
    expect(await applyLocalMigrations({ root: project, persistTo })).toEqual(["0001_more.sql"]);
    expect(wranglerApply(project, persistTo)).toContain("No migrations to apply");
  });

  it("names a migration that fails and applies nothing of it, so the next run tries it again", async () => {
    const project = join(temp, "failing");
    mkdirSync(join(project, "migrations"), { recursive: true });
    copyFileSync(join(root, "wrangler.toml"), join(project, "wrangler.toml"));
    writeFileSync(join(project, "migrations", "0000_first.sql"), "CREATE TABLE first (x text);\n");
    writeFileSync(join(project, "migrations", "0001_broken.sql"), "CREATE TABLE half (x text);\n--> statement-breakpoint\nCREATE INDEX nope ON missing (x);\n");
    const persistTo = join(temp, "failing-state");
    await expect(applyLocalMigrations({ root: project, persistTo })).rejects.toThrow(
      /migration 0001_broken\.sql failed, and nothing of it was applied: .*missing/,
    );

    // 0000 stays applied; 0001's table is not there, so fixing the file lets it apply in full.
    writeFileSync(join(project, "migrations", "0001_broken.sql"), "CREATE TABLE half (x text);\n--> statement-breakpoint\nCREATE INDEX half_x ON half (x);\n");
    expect(await applyLocalMigrations({ root: project, persistTo })).toEqual(["0001_broken.sql"]);
  });
});
