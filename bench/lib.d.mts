// Types for the TypeScript tests that run Node as the agent does (bench/lib.mjs).
/** The Node flags the agent's package starts it with (its bundle's shebang). */
export function agentNodeFlags(): string[];
