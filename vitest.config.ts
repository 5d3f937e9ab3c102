import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";
import { STRIPE_WEBHOOK_SECRET } from "./test/worker/constants.ts";

const migrations = fileURLToPath(new URL("./migrations", import.meta.url));

// Vitest runs numCpus - 1 files at a time by default: one on a 2-core machine. The workerd and tools
// files share nothing (each workerd file has its own D1, R2 and Durable Objects; only
// dns/records.test.ts uses the Cloudflare emulator, whose faults are global), so they run at least
// two at a time; in `npm test`'s hermetic lane, which runs beside the host lane (scripts/test.mjs),
// with one core fewer: one at a time on 2 cores. The agent's files share the host's Docker Engine
// and iptables, and the end-to-end files its ports and local agent: one at a time, each project
// after the one before (groupOrder).
const HERMETIC_FILES_AT_ONCE = process.env.BERTH_TEST_LANE === "hermetic" ? Math.max(1, availableParallelism() - 2) : Math.max(2, availableParallelism() - 1);

// The npm packages the Worker and its tests import, pre-bundled once per run (Vite's dependency
// optimizer) instead of fetched into each file's workerd module by module: stripe, drizzle-orm and
// hono alone are ~1,400 modules, and loading them was most of each file's ~20 s of set-up.
const WORKER_DEPENDENCIES = [
  "@noble/hashes/scrypt.js",
  "age-encryption",
  "bcryptjs",
  "cloudflare",
  "cloudflare/resources/dns/records",
  "drizzle-orm",
  "drizzle-orm/batch",
  "drizzle-orm/d1",
  "drizzle-orm/errors",
  "drizzle-orm/sqlite-core",
  "hono",
  "hono/body-limit",
  "hono/cookie",
  "hono/factory",
  "hono/html",
  "hono/http-exception",
  "hono/jsx",
  "hono/secure-headers",
  "hono/streaming",
  "hono/utils/html",
  "hono/utils/http-status",
  "jose",
  "stripe",
  "zod",
];

export default defineConfig({
  test: {
    projects: [
      {
        // Inside workerd with real D1, against wrangler.toml plus development settings.
        plugins: [
          cloudflareTest(async ({ inject }) => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                ENVIRONMENT: "development",
                SESSION_KEYRING_SECRET: "test-keyring-secret-0123456789abcdef0123456789abcdef",
                BACKUP_KEY_WRAPPING_SECRET: "test-backup-wrapping-secret-0123456789abcdef01234567",
                STRIPE_API_URL: inject("stripeEmulatorUrl"),
                STRIPE_WEBHOOK_SECRET,
                // Read only with a DNS token, which the DNS tests alone set: the other tests keep no records.
                CLOUDFLARE_API_URL: inject("cloudflareEmulatorUrl"),
                // Development's images, built locally by images/build.sh; production's are pinned in wrangler.toml.
                SYNAPSE_IMAGE: "berth/synapse:latest",
                POSTGRES_IMAGE: "berth/postgres:15",
                TEST_MIGRATIONS: await readD1Migrations(migrations),
              },
            },
          })),
        ],
        test: {
          name: "worker",
          deps: { optimizer: { ssr: { enabled: true, include: WORKER_DEPENDENCIES } } },
          include: ["test/worker/**/*.test.{ts,tsx}"],
          maxWorkers: HERMETIC_FILES_AT_ONCE,
          setupFiles: ["./test/worker/setup.ts"],
          globalSetup: ["./test/worker/global-setup.ts"],
          testTimeout: 60_000,
          // Set-up hooks sign customers up and subscribe them: seconds, more on a loaded machine.
          hookTimeout: 60_000,
        },
      },
      {
        // Development tools that run in Node, such as the local Stripe emulator, the tests' port picker
        // and the machine set-up of scripts/.
        test: {
          name: "tools",
          include: ["test/emulator/**/*.test.ts", "test/ports.test.ts", "test/scripts/**/*.test.ts"],
          environment: "node",
          maxWorkers: HERMETIC_FILES_AT_ONCE,
          testTimeout: 60_000,
        },
      },
      {
        // The host agent in Node: real WebSockets, real child processes, temp-dir sysfs trees.
        test: {
          name: "agent",
          include: ["test/agent/**/*.test.ts"],
          environment: "node",
          maxWorkers: 1,
          sequence: { groupOrder: 1 },
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        // Real processes: `npm run dev` (wrangler dev) and headless Chromium.
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          globalSetup: ["./test/e2e/global-setup.ts"],
          testTimeout: 180_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
