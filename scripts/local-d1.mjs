// The local D1 database's migrations, applied as `wrangler d1 migrations apply DB --local` applies
// them: the same database file under <persist-to>/v3/d1, the same `d1_migrations` table, each
// migration and its row in that table in one batch. wrangler starts a runtime for each migration
// (~0.8 s each, 20 s for 25 on CI's machine, at every `npm run dev` of a fresh state directory);
// here one runtime applies them all (docs/decisions.md, "Test files run at once").
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { convertV4MiniflareOptions, Miniflare } from "miniflare";

/** wrangler's default name for the table of applied migrations (wrangler.toml sets no other). */
const MIGRATIONS_TABLE = "d1_migrations";
/** How drizzle-kit separates a migration's statements; a D1 statement is one SQL statement. */
const STATEMENT_BREAKPOINT = "--> statement-breakpoint";

/** wrangler.toml's D1 database: its id (which names the local file) and migrations directory. */
export function localDatabase(root) {
  const toml = readFileSync(join(root, "wrangler.toml"), "utf8");
  const start = toml.indexOf("[[d1_databases]]");
  const section = start < 0 ? "" : toml.slice(start).split(/^\[/m)[1];
  const field = (name) => section.match(new RegExp(`^\\s*${name}\\s*=\\s*"([^"]*)"`, "m"))?.[1];
  const id = field("database_id");
  if (!id) throw new Error("wrangler.toml has no [[d1_databases]] database_id");
  return { id, migrationsDir: join(root, field("migrations_dir") ?? "migrations") };
}

/** A migration file's statements: drizzle-kit's breakpoints split them; blank pieces are dropped. */
export function migrationStatements(sql) {
  return sql
    .split(STATEMENT_BREAKPOINT)
    .map((statement) => statement.trim())
    .filter((statement) => statement.replace(/--[^\n]*/g, "").trim() !== "");
}

/** The migration files not yet applied, in wrangler's order (by name). */
function pendingMigrations(migrationsDir, applied) {
  const done = new Set(applied);
  return readdirSync(migrationsDir)
    .filter((name) => name.endsWith(".sql") && !done.has(name))
    .sort();
}

/** Applies the pending migrations to the local database of `persistTo`; returns their names. */
export async function applyLocalMigrations({ root, persistTo, log = () => {} }) {
  const { id, migrationsDir } = localDatabase(root);
  // The options wrangler's `d1 execute --local` gives Miniflare, so the database file is the one it and `wrangler dev` use.
  const mf = new Miniflare(
    convertV4MiniflareOptions({ modules: true, script: "", resourcePersistencePath: join(persistTo, "v3"), d1Databases: { DATABASE: id } }),
  );
  try {
    const db = await mf.getD1Database("DATABASE");
    // wrangler's statement, to the whitespace: the table reads the same whichever of the two made it.
    await db
      .prepare(`CREATE TABLE IF NOT EXISTS "${MIGRATIONS_TABLE}"(
\t\tid         INTEGER PRIMARY KEY AUTOINCREMENT,
\t\tname       TEXT UNIQUE,
\t\tapplied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL
);`)
      .run();
    const { results } = await db.prepare(`SELECT name FROM "${MIGRATIONS_TABLE}" ORDER BY id`).all();
    const pending = pendingMigrations(
      migrationsDir,
      results.map((row) => row.name),
    );
    for (const name of pending) {
      const statements = migrationStatements(readFileSync(join(migrationsDir, name), "utf8")).map((sql) => db.prepare(sql));
      try {
        await db.batch([...statements, db.prepare(`INSERT INTO "${MIGRATIONS_TABLE}" (name) VALUES (?)`).bind(name)]);
      } catch (error) {
        throw new Error(`migration ${name} failed, and nothing of it was applied: ${error?.cause?.message ?? error.message}`);
      }
    }
    log(pending.length === 0 ? "no D1 migrations to apply" : `applied ${pending.length} D1 migration(s): ${pending[0]} … ${pending.at(-1)}`);
    return pending;
  } finally {
    await mf.dispose();
  }
}
