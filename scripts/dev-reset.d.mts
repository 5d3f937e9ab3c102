// Types for the TypeScript tests that clean up through scripts/dev-reset.mjs.
export function destroyDevHomeservers(stateDir: string): Promise<string[]>;
export function destroyAgentHomeservers(configDir: string): Promise<string[]>;
