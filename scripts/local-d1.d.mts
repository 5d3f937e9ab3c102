// Types for the TypeScript tests of scripts/local-d1.mjs.
export function localDatabase(root: string): { id: string; migrationsDir: string };
export function migrationStatements(sql: string): string[];
export function applyLocalMigrations(options: { root: string; persistTo: string; log?: (message: string) => void }): Promise<string[]>;
