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

/** The delivery round of a connected host: expire, claim and the next deadline, one batch. */
const isDeliveryRound = (sql: string) => sql.startsWith('batch of 3: update "jobs"') && sql.includes("select min(CASE");

/** The host's Durable Object has finished the welcome's work: its last D1 query is the delivery round. */
const welcomeSettled = (entries: Entry[]) => {
  const welcome = entries.findIndex((entry) => entry.kind === "sent" && entry.type === "welcome");
  return welcome >= 0 && entries.slice(welcome).some((entry) => entry.kind === "query" && isDeliveryRound(entry.sql));
};

describe("D1 queries per dispatched job", () => {
  it("at most 3 before the agent is sent the job (session, job written with its audit entry, job claimed); the rest after", async () => {
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
      // The session (one batch), the job's insert, the Durable Object's delivery round.
      expect(before.length).toBeLessThanOrEqual(3);
      const writes = before.filter((sql) => sql.includes('insert into "jobs"'));
      expect(writes).toHaveLength(1);
      // The operator's audit entry is written with the job, in its round trip: no query of its own.
      expect(writes[0]).toMatch(/^batch of 2: insert into "jobs" .* \| insert into "audit_log"/);
      expect([...before, ...after].filter((sql) => sql.includes('insert into "audit_log"'))).toHaveLength(1);
      expect(isDeliveryRound(before.at(-1)!)).toBe(true);
      // The object's alarm needs no query of its own either: the round read the next deadline after its claims.
      expect(after.filter((sql) => sql.startsWith("select min(CASE"))).toEqual([]);
    } finally {
      recording.stop();
    }
  });
});
