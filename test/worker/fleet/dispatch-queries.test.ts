import { describe, expect, it } from "vitest";
import { post } from "../helpers";
import { queriesAround, recordD1, type Entry } from "../d1-queries";
import { connectedAgent, enrolledHost, operatorCookie } from "./fleet-helpers";

/** Polls until `done()` holds (a generous bound, for a loaded machine). */
async function until(done: () => boolean, what: string) {
  for (let waited = 0; !done(); waited += 20) {
    if (waited > 30_000) throw new Error(`not within 30 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The host's Durable Object has finished the welcome's work: its last D1 query is the next job deadline. */
const welcomeSettled = (entries: Entry[]) => {
  const welcome = entries.findIndex((entry) => entry.kind === "sent" && entry.type === "welcome");
  return welcome >= 0 && entries.slice(welcome).some((entry) => entry.kind === "query" && entry.sql.startsWith("select min(CASE"));
};

describe("D1 queries per dispatched job", () => {
  it("at most 3 before the agent is sent the job (session, job written, job claimed); the rest after", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const recording = recordD1();
    try {
      const agent = await connectedAgent(host);
      await until(() => welcomeSettled(recording.entries), "the welcome's work done");
      const mark = recording.entries.length;
      const response = await post(`/api/admin/hosts/${host.hostId}/jobs`, { kind: "noop" }, { cookie });
      expect(response.status).toBe(202);
      await agent.nextOfType("job");
      const { before, after } = queriesAround(recording.entries.slice(mark), "job");
      // Today: the session (one batch), the job's insert, the Durable Object's expire-and-claim batch.
      expect(before.length).toBeLessThanOrEqual(3);
      expect(before.filter((sql) => sql.startsWith('insert into "jobs"'))).toHaveLength(1);
      // The next deadline (the object's alarm) and the operator's audit entry wait until the job is on its way.
      expect(after.some((sql) => sql.startsWith('insert into "audit_log"'))).toBe(true);
    } finally {
      recording.stop();
    }
  });
});
