import { spawn } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Journal, JOURNAL_RETENTION_MS } from "../../agent/journal.ts";
import { REPO_ROOT, runCleanups, tempDir } from "./helpers.ts";

afterEach(runCleanups);

describe("job journal", () => {
  it("a done job is never run again: its stored result is what a delivery gets", () => {
    const dir = tempDir();
    const journal = new Journal(dir);
    expect(journal.verdict("job-1")).toEqual({ action: "run", attempt: 1 });
    const running = journal.markRunning("job-1", "noop", 1);
    journal.markDone(running, { ok: true, result: { answer: 42 } });

    const again = new Journal(dir); // another process, later
    const verdict = again.verdict("job-1");
    expect(verdict.action).toBe("resend");
    if (verdict.action !== "resend") throw new Error("unreachable");
    expect(verdict.entry).toMatchObject({ ok: true, result: { answer: 42 }, kind: "noop" });
  });

  it("a job running in this process is only acknowledged; one left running by another process is rerun", () => {
    const dir = tempDir();
    const first = new Journal(dir, { pid: 111 });
    first.markRunning("job-2", "sleep", 1);
    expect(first.verdict("job-2").action).toBe("ack-only");

    // The agent was killed mid-job; a new process (even one that got the same pid) finds the entry.
    const second = new Journal(dir, { pid: 111 });
    const verdict = second.verdict("job-2");
    expect(verdict).toMatchObject({ action: "rerun-interrupted", attempt: 2, entry: { pid: 111, state: "running" } });
    second.markRunning("job-2", "sleep", 2);
    expect(second.get("job-2")).toMatchObject({ attempt: 2, instance: second.instance });
  });

  it("job ids of any characters map to safe, distinct file names", () => {
    const dir = tempDir();
    const journal = new Journal(dir);
    for (const id of ["../../etc/passwd", "a/b", "a_b", "ümlaut", "x".repeat(128)]) {
      journal.markDone(journal.markRunning(id, "noop", 1), { ok: true, result: id });
    }
    const files = readdirSync(dir);
    expect(files).toHaveLength(5);
    for (const f of files) expect(f).toMatch(/^job-[A-Za-z0-9_-]+\.json$/);
    expect(journal.get("../../etc/passwd")).toMatchObject({ result: "../../etc/passwd" });
  });

  it("ignores a temporary file left by a crash mid-write and removes it on start", () => {
    const dir = tempDir();
    const journal = new Journal(dir);
    journal.markDone(journal.markRunning("job-3", "noop", 1), { ok: true, result: "first" });
    const file = journal.fileOf("job-3");
    // What a writer killed between write and rename leaves: a truncated temp file beside the entry.
    const leftover = join(dir, `.${file.split("/").pop()}.999.deadbeef.tmp`);
    writeFileSync(leftover, '{"id":"job-3","state":"done","ok":fa');

    expect(journal.get("job-3")).toMatchObject({ state: "done", result: "first" });
    expect(journal.list()).toHaveLength(1);
    const restarted = new Journal(dir);
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect(restarted.get("job-3")).toMatchObject({ state: "done", result: "first" });
  });

  it("a process killed (SIGKILL) halfway through writing an entry leaves the previous entry intact", async () => {
    const dir = tempDir();
    // The child writes an entry, then dies after writing half of the next version of it:
    // fs.writeSync is swapped for one that writes half the bytes and then SIGKILLs the process.
    const script = `
      import fs from "node:fs";
      import { syncBuiltinESMExports } from "node:module";
      const { Journal } = await import(${JSON.stringify(join(REPO_ROOT, "agent/journal.ts"))});
      const j = new Journal(${JSON.stringify(dir)});
      j.markDone(j.markRunning("job-x", "noop", 1), { ok: true, result: "first" });
      const real = fs.writeSync;
      fs.writeSync = (fd, buffer, offset, length) => {
        real(fd, buffer, offset, Math.floor(length / 2));
        process.kill(process.pid, "SIGKILL");
      };
      syncBuiltinESMExports();
      j.markRunning("job-x", "noop", 2);
      process.stdout.write("survived\\n");
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    const signal = await new Promise((resolve) => child.on("exit", (_code, sig) => resolve(sig)));
    expect(signal).toBe("SIGKILL");
    expect(out).not.toContain("survived");

    // The half-written temp file is there, and it is not what the journal reads.
    const leftovers = readdirSync(dir).filter((f) => f.endsWith(".tmp"));
    expect(leftovers).toHaveLength(1);
    expect(() => JSON.parse(readFileSync(join(dir, leftovers[0]!), "utf8"))).toThrow();
    const journal = new Journal(dir);
    expect(journal.get("job-x")).toMatchObject({ state: "done", ok: true, result: "first", attempt: 1 });
    expect(journal.verdict("job-x").action).toBe("resend");
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("prunes done entries older than 7 days and keeps newer ones", () => {
    const dir = tempDir();
    let now = 1_700_000_000_000;
    const journal = new Journal(dir, { now: () => now });
    journal.markDone(journal.markRunning("old", "noop", 1), { ok: true, result: null });
    now += JOURNAL_RETENTION_MS - 1000;
    journal.markDone(journal.markRunning("recent", "noop", 1), { ok: false, error: "boom" });
    journal.markRunning("mine", "sleep", 1); // running in this process: never pruned
    now += 2000;
    expect(journal.prune()).toBe(1);
    expect(journal.get("old")).toBeUndefined();
    expect(journal.get("recent")).toMatchObject({ ok: false, error: "boom" });
    expect(journal.get("mine")).toMatchObject({ state: "running" });
  });
});
