// The export passphrase's path through the Worker: refused when weak (never
// repeated back), wrapped in the job row and bound to its export, unwrapped
// only onto the host's connection, and erased from D1 once the job has ended,
// whether it succeeded or failed.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { BACKUP_MIN_PART_SIZE } from "../../../protocol/messages";
import { workContext } from "../../../worker/context";
import type { ApiError } from "../../../worker/errors";
import { requireStrongPassphrase, unwrapPassphrase, wrapPassphrase } from "../../../worker/exports/passphrase";
import { dispatchJob } from "../../../worker/fleet/hosts";
import { connectedAgent, enrolledHost, operatorCookie } from "../fleet/fleet-helpers";

interface JobMessage {
  type: "job";
  job: { id: string; kind: string; payload: Record<string, unknown> };
}

const SECRET = () => workContext(env, new Date()).config.backupKeyWrappingSecret;
const strong = () => `hedgehog lantern ${crypto.randomUUID()}`;

function refusal(passphrase: string): ApiError {
  try {
    requireStrongPassphrase(passphrase);
  } catch (error) {
    return error as ApiError;
  }
  throw new Error("accepted");
}

/** Every column of the job's row, as D1 holds it. */
async function storedRow(jobId: string): Promise<string> {
  return JSON.stringify(await env.DB.prepare("SELECT * FROM jobs WHERE id = ?").bind(jobId).first());
}

describe("export passphrases", () => {
  it.each(["", "short", "aaaaaaaaaaaaaaaa", "abababababababab", "x".repeat(1025)])("refuses %j with a clear error that does not repeat it", (passphrase) => {
    const error = refusal(passphrase);
    expect(error).toMatchObject({ status: 400, code: "weak_passphrase" });
    expect(error.message).toMatch(/passphrase/);
    if (passphrase) expect(error.message).not.toContain(passphrase);
  });

  it("accepts a passphrase of a few words", () => {
    expect(() => requireStrongPassphrase("correct horse battery staple")).not.toThrow();
  });

  it("is wrapped bound to its export: no plaintext, and it does not unwrap as another export's", async () => {
    const passphrase = strong();
    const wrapped = await wrapPassphrase(SECRET(), "export", "export-one", passphrase);
    expect(wrapped).not.toContain(passphrase);
    expect(await unwrapPassphrase(SECRET(), "export", "export-one", wrapped)).toBe(passphrase);
    await expect(unwrapPassphrase(SECRET(), "export", "export-two", wrapped)).rejects.toThrow();
  });

  it.each([true, false])("goes to the host unwrapped, never rests in D1 in the clear, and is erased when the job ends (ok: %s)", async (ok) => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await connectedAgent(host);
    const passphrase = strong();
    const exportId = `export-${crypto.randomUUID().slice(0, 8)}`;
    const wrappedPassphrase = await wrapPassphrase(SECRET(), "export", exportId, passphrase);
    const ctx = workContext(env, new Date());
    const job = await dispatchJob(
      ctx.db,
      env,
      {
        hostId: host.hostId,
        kind: "homeserver.full_export",
        payload: {
          serverId: "srv-export",
          exportId,
          wrappedPassphrase,
          partSize: BACKUP_MIN_PART_SIZE,
          uploadBase: `https://berth.test/api/agent/exports/${exportId}`,
        },
      },
      ctx.now,
    );
    const { job: delivered } = await agent.next<JobMessage>((message) => message?.type === "job" && message.job.id === job.id);
    expect(delivered.payload).toMatchObject({ exportId, passphrase });
    expect(delivered.payload).not.toHaveProperty("wrappedPassphrase");
    expect(await storedRow(job.id)).not.toContain(passphrase);
    expect(await storedRow(job.id)).toContain(wrappedPassphrase);

    agent.send({ type: "job.ack", id: job.id });
    agent.send(
      ok
        ? {
            type: "job.result",
            id: job.id,
            ok: true,
            result: {
              serverId: "srv-export",
              exportId,
              mediaFiles: 0,
              size: 1,
              sha256: "0".repeat(64),
              parts: [{ partNumber: 1, size: 1, sha256: "0".repeat(64) }],
            },
          }
        : { type: "job.result", id: job.id, ok: false, error: "pg_dump exited with 1" },
    );
    await expect.poll(async () => JSON.parse(await storedRow(job.id)).status).toBe(ok ? "succeeded" : "failed");
    await expect.poll(async () => JSON.parse(JSON.parse(await storedRow(job.id)).payload).wrappedPassphrase).toBeNull();
    const row = await storedRow(job.id);
    expect(row).not.toContain(passphrase);
    expect(row).not.toContain(wrappedPassphrase);
  });
});
