// Synapse's database schema as an import checks it: the versions the server's Synapse image
// migrates between, read from the installed Synapse itself (SCHEMA_VERSION and
// SCHEMA_COMPAT_VERSION in synapse/storage/schema/__init__.py), and the version a database is at
// (its schema_version row).
import { ImportRefused } from "../backup/import-archive.ts";
import { schemaVersionsContainer } from "./containers.ts";
import type { HomeserverCore } from "./core.ts";
import type { HomeserverNames, HomeserverPaths } from "./names.ts";
import type { HomeserverRecord } from "./records.ts";

export interface SynapseSchema {
  /** SCHEMA_VERSION: what its migrations bring a database to. */
  current: number;
  /** SCHEMA_COMPAT_VERSION: the oldest schema it takes a database from (see checkImportableSchema). */
  compat: number;
}

/** The schema versions of the server's Synapse image, from a one-off run of it. */
export async function imageSchema(
  core: HomeserverCore,
  record: HomeserverRecord,
  names: HomeserverNames,
  paths: HomeserverPaths,
  signal: AbortSignal,
): Promise<SynapseSchema> {
  const run = await core.runtime.runToCompletion(schemaVersionsContainer(core.specInput(record, names, paths, "synapse", record.images.synapse)), signal);
  const match = /^(\d+) (\d+)$/m.exec(run.output);
  if (run.exitCode !== 0 || !match)
    throw new Error(`reading the schema versions of ${record.images.synapse} failed (exit ${run.exitCode}): ${run.output.trim().slice(-300)}`);
  return { current: Number(match[1]), compat: Number(match[2]) };
}

/** The database's schema version; nothing when it has no schema_version table (it is not Synapse's). */
export async function databaseSchema(core: HomeserverCore, names: HomeserverNames): Promise<number | undefined> {
  const read = await core.psql(names, "SELECT version FROM schema_version;");
  if (read.exitCode !== 0 && /relation "schema_version" does not exist/.test(read.stderr)) return undefined;
  const version = Number(read.stdout.trim());
  if (read.exitCode !== 0 || read.stdout.trim() === "" || !Number.isSafeInteger(version)) {
    throw new Error(`reading the database's schema version failed: ${(read.stderr || read.stdout).trim().slice(0, 300)}`);
  }
  return version;
}

/**
 * Our rule for an imported database: at most the image's SCHEMA_VERSION (Synapse cannot run a
 * newer one), and at least its SCHEMA_COMPAT_VERSION. Synapse still carries deltas from far older
 * schemas, but a database that old comes from a Synapse years behind, whose upgrade would run
 * years of migrations and background updates nobody here has tried: its owner upgrades their own
 * Synapse first.
 */
export function checkImportableSchema(found: number | undefined, schema: SynapseSchema): number {
  if (found === undefined) throw new ImportRefused("the archive's database is not a Synapse database (it has no schema_version table)");
  if (found > schema.current) {
    throw new ImportRefused(
      `the archive's database is at Synapse schema version ${found}, newer than this host's Synapse understands (${schema.current}): it can be imported once Berth runs a Synapse that new`,
    );
  }
  if (found < schema.compat) {
    throw new ImportRefused(
      `the archive's database is at Synapse schema version ${found}, older than the oldest this host's Synapse upgrades from (${schema.compat}; it runs ${schema.current}): upgrade your Synapse to a release at schema version ${schema.compat} or newer, then make the archive again`,
    );
  }
  return found;
}
