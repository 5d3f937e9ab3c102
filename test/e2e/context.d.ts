// Values that test/e2e/global-setup.ts hands to the e2e tests through vitest's provide/inject.
declare module "vitest" {
  export interface ProvidedContext {
    /** Base URL (no trailing slash) of `npm run dev`: development settings, dev mailbox mounted. */
    devBaseUrl: string;
    /** Base URL (no trailing slash) of `scripts/dev.mjs --production`: wrangler.toml exactly as deployed. */
    prodBaseUrl: string;
  }
}

export {};
