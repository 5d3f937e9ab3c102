import { afterEach, describe, expect, it, vi } from "vitest";
import type { AgentMessage, JobAssignment } from "../../protocol/messages.ts";
import { generateAgeKeyPair } from "../../agent/backup/age.ts";
import { builtinHandlers } from "../../agent/handlers/index.ts";
import { HandlerRegistry } from "../../agent/handlers/registry.ts";
import type { JobHandler } from "../../agent/handlers/types.ts";
import { JobRunner } from "../../agent/jobs.ts";
import { Journal } from "../../agent/journal.ts";
import { abortableDelay } from "../../agent/handlers/test-kinds.ts";
import { captureLog, onCleanup, runCleanups, sleep, tempDir, waitFor } from "./helpers.ts";

afterEach(runCleanups);

/** Controlled time for the job handlers' and the runner's timers and clock (call before setup). */
function controlTime(): void {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
  onCleanup(() => {
    vi.useRealTimers();
  });
}

function job(id: string, kind: string, payload: JobAssignment["payload"] = null): JobAssignment {
  return { id, kind, payload, attempt: 1, deadline: Date.now() + 60_000 };
}

function setup(options: { handlers?: HandlerRegistry; journalDir?: string; maxConcurrent?: number } = {}) {
  const dataRoot = tempDir();
  const journal = new Journal(options.journalDir ?? tempDir());
  const sent: AgentMessage[] = [];
  const logged = captureLog();
  const handlers =
    options.handlers ??
    builtinHandlers({
      diskEncryption: () => ({ dataRoot, encrypted: false, devices: [], allowUnencrypted: true }),
      onInventoryChanged: () => {},
    });
  const runner = new JobRunner({ journal, handlers, send: (m) => sent.push(m), dataRoot, log: logged.log, maxConcurrent: options.maxConcurrent ?? 4 });
  const of = <T extends AgentMessage["type"]>(type: T, id?: string) =>
    sent.filter((m) => m.type === type && (id === undefined || (m as { id?: string }).id === id)) as Array<Extract<AgentMessage, { type: T }>>;
  return { runner, journal, sent, of, dataRoot, logged };
}

/** A noop handler that counts its calls and waits until released (or aborted). */
function gatedHandler() {
  let calls = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const handler: JobHandler<"noop"> = async (_payload, ctx) => {
    calls++;
    await Promise.race([gate, new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true }))]);
    return { ok: true };
  };
  return { handler, release: () => release(), calls: () => calls };
}

describe("job runner", () => {
  it("noop: ack at once, then an ok result", async () => {
    const { runner, sent } = setup();
    runner.handle(job("j1", "noop"));
    expect(sent[0]).toEqual({ type: "job.ack", id: "j1" });
    await runner.idle();
    expect(sent.at(-1)).toEqual({ type: "job.result", id: "j1", ok: true, result: { ok: true } });
  });

  it("sleep: reports progress and returns only when its time is up", async () => {
    controlTime();
    const { runner, of, journal } = setup();
    runner.handle(job("j2", "sleep", { ms: 600 }));
    await vi.advanceTimersByTimeAsync(599);
    expect(of("job.result", "j2")).toEqual([]);
    expect(journal.get("j2")).toMatchObject({ state: "running" });
    await vi.advanceTimersByTimeAsync(1);
    await runner.idle();
    const progress = of("job.progress", "j2");
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress.at(-1)).toMatchObject({ progress: 1 });
    for (const p of progress) expect(p.progress).toBeGreaterThanOrEqual(0);
    expect(of("job.result", "j2")).toEqual([{ type: "job.result", id: "j2", ok: true, result: { sleptMs: 600 } }]);
  });

  it("sleep refuses more than 10 minutes, naming the field; fail fails with its message; unknown kinds fail clearly", async () => {
    const { runner, of, journal } = setup();
    runner.handle(job("too-long", "sleep", { ms: 10 * 60 * 1000 + 1 }));
    runner.handle(job("f", "fail", { message: "as asked" }));
    runner.handle(job("u", "homeserver.teleport", {}));
    await runner.idle();
    expect(of("job.result", "too-long")[0]).toMatchObject({ ok: false, error: expect.stringMatching(/^sleep: invalid payload: ms: /) });
    expect(of("job.result", "f")[0]).toEqual({ type: "job.result", id: "f", ok: false, error: "as asked" });
    expect(of("job.result", "u")[0]).toMatchObject({ ok: false, error: expect.stringMatching(/unknown job kind "homeserver.teleport".*noop/) });
    expect(journal.get("f")).toMatchObject({ state: "done", ok: false });
    expect(journal.get("u")).toBeUndefined(); // nothing ran: an upgraded agent may run it later
  });

  it("a repeated delivery while the job runs is acknowledged again and run once", async () => {
    const gated = gatedHandler();
    const { runner, of } = setup({ handlers: new HandlerRegistry().register("noop", gated.handler) });
    runner.handle(job("dup", "noop"));
    await waitFor(() => gated.calls() === 1, "the handler to start");
    runner.handle({ ...job("dup", "noop"), attempt: 2 });
    runner.handle({ ...job("dup", "noop"), attempt: 3 });
    expect(of("job.ack", "dup")).toHaveLength(3);
    gated.release();
    await runner.idle();
    expect(gated.calls()).toBe(1);
    expect(of("job.result", "dup")).toEqual([{ type: "job.result", id: "dup", ok: true, result: { ok: true } }]);
  });

  it("after a job is done, a repeated delivery gets the same result and the handler is not called again", async () => {
    let calls = 0;
    // The result counts the calls: a stored result sent again still says 1.
    const handlers = new HandlerRegistry().register("sleep", async () => ({ sleptMs: ++calls }));
    const journalDir = tempDir();
    const first = setup({ handlers, journalDir });
    first.runner.handle(job("once", "sleep", { ms: 0 }));
    await first.runner.idle();
    expect(first.of("job.result", "once")).toEqual([{ type: "job.result", id: "once", ok: true, result: { sleptMs: 1 } }]);

    first.runner.handle(job("once", "sleep", { ms: 0 })); // same process
    const second = setup({ handlers, journalDir }); // and a restarted agent
    second.runner.handle(job("once", "sleep", { ms: 0 }));
    await first.runner.idle();
    await second.runner.idle();
    expect(calls).toBe(1);
    expect(first.of("job.result", "once")).toHaveLength(2);
    expect(first.of("job.result", "once")[1]).toEqual({ type: "job.result", id: "once", ok: true, result: { sleptMs: 1 } });
    expect(second.sent).toEqual([
      { type: "job.ack", id: "once" },
      { type: "job.result", id: "once", ok: true, result: { sleptMs: 1 } },
    ]);
  });

  it("shutdown aborts a job that outlasts the grace period: no result, its entry stays running, the next agent reruns it", async () => {
    controlTime();
    const journalDir = tempDir();
    const first = setup({ journalDir });
    first.runner.handle(job("long", "sleep", { ms: 60_000 }));
    first.runner.handle(job("short", "sleep", { ms: 50 }));
    expect(first.journal.get("long")).toMatchObject({ state: "running" });
    const stopping = first.runner.shutdown(300);
    await vi.advanceTimersByTimeAsync(300);
    // Aborted, the handler lets go at once: the runner need not wait out its abort grace period.
    const aborted = await waitFor(
      () => first.logged.lines.find((l) => l.msg === "job aborted by shutdown: handed back (its journal entry stays running)"),
      "the aborted job to let go",
    );
    expect(aborted).toMatchObject({ jobId: "long" });
    const report = await stopping;
    expect(report.handedBack).toEqual(["long"]);
    expect(report.finished).toEqual(["short"]);
    expect(first.of("job.result", "long")).toEqual([]);
    expect(first.of("job.result", "short")).toHaveLength(1);
    expect(first.journal.get("long")).toMatchObject({ state: "running", attempt: 1 });

    // Deliveries during shutdown are not taken (not even acknowledged).
    first.runner.handle(job("late", "noop"));
    expect(first.of("job.ack", "late")).toEqual([]);

    const second = setup({ journalDir });
    second.runner.handle({ ...job("long", "sleep", { ms: 20 }), attempt: 2 });
    await vi.advanceTimersByTimeAsync(20);
    await second.runner.idle();
    expect(second.of("job.result", "long")).toEqual([{ type: "job.result", id: "long", ok: true, result: { sleptMs: 20 } }]);
    expect(second.journal.get("long")).toMatchObject({ state: "done", attempt: 2 });
  });

  it("runs at most maxConcurrent jobs at once, the rest in order of arrival", async () => {
    let running = 0;
    let peak = 0;
    const order: string[] = [];
    const handlers = new HandlerRegistry().register("sleep", async ({ ms }, ctx) => {
      order.push(ctx.job.id);
      running++;
      peak = Math.max(peak, running);
      await abortableDelay(ms, ctx.signal);
      running--;
      return { sleptMs: ms };
    });
    const { runner, of } = setup({ handlers, maxConcurrent: 2 });
    for (let i = 0; i < 6; i++) runner.handle(job(`w${i}`, "sleep", { ms: 40 }));
    expect(of("job.ack")).toHaveLength(6);
    await runner.idle();
    expect(peak).toBe(2);
    expect(order).toEqual(["w0", "w1", "w2", "w3", "w4", "w5"]);
    expect(of("job.result")).toHaveLength(6);
  });

  it("a result that is not its kind's, or too large for the socket, becomes an error naming what is wrong", async () => {
    const serverId = "srv-1";
    const backupId = "bkp-1";
    const part = { partNumber: 1, size: 8 * 1024 * 1024, sha256: "a".repeat(64) };
    const handlers = new HandlerRegistry()
      // A handler typed against its kind cannot return this: a cast stands for a handler that lies.
      .register("noop", async () => ({ ok: "yes" }) as never)
      .register("homeserver.backup", async () => ({
        serverId,
        backupId,
        size: 1,
        sha256: "b".repeat(64),
        parts: Array.from({ length: 3_000 }, (_, i) => ({ ...part, partNumber: i + 1 })),
      }));
    const { runner, of } = setup({ handlers });
    runner.handle(job("a", "noop"));
    const backup = {
      serverId,
      backupId,
      recipient: generateAgeKeyPair().recipient,
      partSize: 8 * 1024 * 1024,
      uploadBase: `https://berth.example/api/agent/backups/${backupId}`,
    };
    runner.handle(job("b", "homeserver.backup", backup));
    await runner.idle();
    expect(of("job.result", "a")[0]).toMatchObject({ ok: false, error: expect.stringMatching(/^noop: invalid result: ok: /) });
    expect(of("job.result", "b")[0]).toMatchObject({ ok: false, error: expect.stringMatching(/too large/) });
    await sleep(0);
  });

  it("a payload that is not its kind's fails the job naming the field, and the handler never runs", async () => {
    let calls = 0;
    const handlers = new HandlerRegistry().register("sleep", async ({ ms }) => {
      calls++;
      return { sleptMs: ms };
    });
    const { runner, of, journal } = setup({ handlers });
    runner.handle(job("no-ms", "sleep", { millis: 5 }));
    runner.handle(job("text", "sleep", { ms: "5" }));
    await runner.idle();
    expect(of("job.result", "no-ms")[0]).toMatchObject({
      ok: false,
      error: expect.stringMatching(/^sleep: invalid payload: ms: .*; \(the whole value\): .*millis/),
    });
    expect(of("job.result", "text")[0]).toMatchObject({ ok: false, error: expect.stringMatching(/^sleep: invalid payload: ms: /) });
    expect(calls).toBe(0);
    expect(journal.get("text")).toMatchObject({ state: "done", ok: false });
  });
});
