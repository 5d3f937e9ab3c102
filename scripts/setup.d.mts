// Types for the TypeScript tests of scripts/setup.mjs.
export interface Need {
  name: string;
  commands: string[];
  packages: string[];
}
export interface SetupProbe {
  isRoot(): boolean;
  osRelease(): { id: string; idLike: string[]; name: string } | null;
  hasCommand(name: string): boolean;
  docker(): "answers" | "denied" | "down";
  imagesPresent(): boolean;
  /** Whether pebbleDir() holds the built Pebble (asked only with forTests). */
  pebbleBuilt(): boolean;
  /** /etc/docker/daemon.json, parsed; null when there is none (asked only when dockerd must be started). */
  daemonConfig(): Record<string, unknown> | null;
}
export type SetupStep = "install" | "start-dockerd" | "build-images" | "build-pebble";
export interface SetupPlan {
  os: string;
  root: boolean;
  install: string[];
  missing: string[];
  steps: SetupStep[];
  blockers: string[];
  commands: string[];
  rootCommand: string | null;
}
export const HOST_NEEDS: Need[];
export const TEST_NEEDS: Need[];
export const IMAGES: string[];
export const DOCKERD_LOG: string;
export const DOCKERD_ADDRESS_POOL: string;
export function dockerdArgs(daemonConfig: Record<string, unknown> | null): string[];
export const PEBBLE_MODULE: string;
export const PEBBLE_VERSION: string;
export function pebbleDir(env?: NodeJS.ProcessEnv): string;
export interface PebbleFiles {
  pebble: string;
  challtestsrv: string;
  minicaRoot: string;
  httpsCertificate: string;
  httpsKey: string;
}
export function pebbleFiles(dir?: string): PebbleFiles;
export function planSetup(probe: SetupProbe, options?: { forTests?: boolean }): SetupPlan;
export function reportLines(plan: SetupPlan): string[];
export function systemProbe(): SetupProbe;
export function runSetup(options?: {
  forTests?: boolean;
  check?: boolean;
  log?: (line: string) => void;
  probe?: SetupProbe;
}): Promise<{ ready: boolean; did: string[] }>;
