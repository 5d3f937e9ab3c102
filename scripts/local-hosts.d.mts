// Types for the TypeScript tests that run `npm run dev -- --hosts N` (scripts/local-hosts.mjs).
export interface LocalHost {
  /** 1 … N. */
  index: number;
  /** The name it enrolls with: dev-host (one host), dev-host-<i>. */
  name: string;
  /** h<i> with --hosts N ≥ 2; none for the single host. */
  hostNamespace?: string;
  /** 127.0.0.<i+1>, where its Caddy listens, with --hosts N ≥ 2; none (every interface) for the single host. */
  address?: string;
  configDir: string;
  dataRoot: string;
  caddyDir: string;
  httpsPort: number;
  httpPort: number;
}
export const MAX_LOCAL_HOSTS: number;
export function localHosts(persistTo: string, count: number, httpsPort: number): LocalHost[];
export function localAgentConfigDirs(persistTo: string): string[];
export function localAgentConfig(configDir: string): { hostId: string; hostNamespace?: string; dataRoot: string; stateDir?: string } | undefined;
export function routedServerNames(configDir: string): string[];
export function parseStandInDomains(values: string[]): Record<string, { host: string; port: number }> | undefined;
export function startLocalHosts(options: {
  hosts: LocalHost[];
  baseUrl: string;
  enrollByHand: boolean;
  /** --stand-in-domain: customers' domains (under .test) each host's Caddy proxies to a local server. */
  standInDomains?: Record<string, { host: string; port: number }>;
  start: (name: string, args: string[], env: NodeJS.ProcessEnv, command?: string) => unknown;
  log: (message: string) => void;
}): Promise<void>;
