import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { PASSWORD, call, emailedToken, logIn, post, setNow } from "../helpers";
import { runningServer, serverEvents } from "./server-helpers";

// A live status stream lasts as long as the session that opened it: revoking
// the session ends the stream within a poll, not at the stream's 5-minute end.
// The clock the Worker reads is frozen here, so that end is never reached: a
// stream that ends was ended by the revocation (the test's timeout bounds the wait).

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

async function streamOfOwner() {
  const server = await runningServer();
  setNow(Date.now());
  const stream = await serverEvents(server.owner.cookie, server.id);
  expect((await stream.next())!.status).toBe("running");
  return { ...server, stream };
}

/** Reads the stream to its end; null means it ended. */
async function ended(stream: Awaited<ReturnType<typeof serverEvents>>) {
  for (;;) if ((await stream.next()) === null) return true;
}

describe("live status streams end with their session", () => {
  it("when that session logs out", async () => {
    const { owner, stream } = await streamOfOwner();
    expect((await post("/api/auth/logout", undefined, { cookie: owner.cookie })).status).toBe(204);
    expect(await ended(stream)).toBe(true);
  });

  it("when another session logs out everywhere", async () => {
    const { owner, stream } = await streamOfOwner();
    const other = await logIn(owner.email);
    expect((await post("/api/auth/logout-all", undefined, { cookie: other })).status).toBe(204);
    expect(await ended(stream)).toBe(true);
  });

  it("when the password is changed from another session", async () => {
    const { owner, stream } = await streamOfOwner();
    const other = await logIn(owner.email);
    const response = await post("/api/auth/password-change", { currentPassword: PASSWORD, newPassword: "a whole new passphrase" }, { cookie: other });
    expect(response.status).toBe(200);
    expect(await ended(stream)).toBe(true);
  });

  it("when the password is reset", async () => {
    const { owner, stream } = await streamOfOwner();
    expect((await post("/api/auth/password-reset/request", { email: owner.email })).status).toBe(202);
    const token = await emailedToken(owner.email, "/reset-password");
    expect((await post("/api/auth/password-reset/confirm", { token, password: "a whole new passphrase" })).status).toBe(200);
    expect(await ended(stream)).toBe(true);
  });

  it("when the account is deleted", async () => {
    const { owner, stream } = await streamOfOwner();
    const other = await logIn(owner.email);
    expect((await call("/api/me", { method: "DELETE", body: { password: PASSWORD }, cookie: other })).status).toBe(202);
    expect(await ended(stream)).toBe(true);
  });
});
