#!/usr/bin/env node
// Grants (or removes) the operator role, which /api/admin requires:
//
//   npm run operator -- grant alice@example.com                 # the local dev database
//   npm run operator -- grant alice@example.com --remote        # production D1
//   npm run operator -- revoke alice@example.com [--persist-to DIR]
//
// The account must exist and its email address be verified (sign up, then follow the emailed link):
// an operator is trusted with the fleet, so the address must be proven to be theirs.
// Runs `wrangler d1 execute`.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    remote: { type: "boolean", default: false },
    "persist-to": { type: "string", default: join(root, ".wrangler", "state") },
  },
});
const [action, rawEmail] = positionals;
// Addresses are stored lower-cased; anything outside this alphabet cannot be an account's email here,
// and keeping to it means the value can be quoted into SQL safely.
const email = rawEmail?.trim().toLowerCase();
if (!["grant", "revoke"].includes(action ?? "") || !email || !/^[a-z0-9._%+-]+@[a-z0-9.-]+$/.test(email)) {
  console.error("usage: npm run operator -- grant|revoke <email> [--remote | --persist-to DIR]");
  process.exit(2);
}
const role = action === "grant" ? "operator" : "customer";
const granting = role === "operator" ? " AND email_verified_at IS NOT NULL" : "";
const sql =
  `UPDATE users SET role = '${role}' WHERE email = '${email}'${granting}; ` + `SELECT email, role, email_verified_at FROM users WHERE email = '${email}';`;
const wrangler = join(dirname(createRequire(import.meta.url).resolve("wrangler/package.json")), "bin", "wrangler.js");
const target = values.remote ? ["--remote"] : ["--local", "--persist-to", resolve(values["persist-to"])];
const execute = () =>
  spawnSync(process.execPath, [wrangler, "d1", "execute", "DB", ...target, "--json", "--command", sql], {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
  });
// A running dev server writes the same local database file; whichever side finds it locked fails
// at once (SQLite's SQLITE_BUSY), so the grant waits for its turn, for up to 10 s.
const busy = (run) => run.status !== 0 && /SQLITE_BUSY|database is locked/.test(`${run.stdout}${run.stderr}`);
let result = execute();
for (let waited = 0; busy(result) && !values.remote && waited < 10_000; waited += 500) {
  if (waited === 0) console.error("The local database is busy (is the dev server writing?); trying again for up to 10 s.");
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);
  result = execute();
}
if (result.status !== 0) {
  console.error(result.stderr || result.stdout);
  process.exit(1);
}
const rows = JSON.parse(result.stdout).flatMap((statement) => statement.results ?? []);
if (rows.length === 0) {
  console.error(`No account with the email ${email}: sign up first.`);
  process.exit(1);
}
if (role === "operator" && rows[0].email_verified_at === null) {
  console.error(
    `${email} has not verified its email address: only a verified account can be an operator. Follow the link in its sign-up mail (or ask for a new one), then grant again.`,
  );
  process.exit(1);
}
console.log(`${email} is now ${rows[0].role === "operator" ? "an operator" : "a customer"}.`);
