// Types for the TypeScript tests of scripts/local-d1.mjs.
export const MIGRATIONS_TABLE: string;
export function localDatabase(root: string): { id: string; migrationsDir: string };
export function migrationStatements(sql: string): string[];
export function pendingMigrations(migrationsDir: string, applied: string[]): string[];
export function applyLocalMigrations(options: { root: string; persistTo: string; log?: (message: string) => void }): Promise<string[]>;
