import { describe, expect, it } from "vitest";
import { CLOSE } from "../../../protocol/messages";
import { call, expectError, PRODUCTION } from "../helpers";
import { connectedAgent, enrolledHost, operatorCookie } from "./fleet-helpers";

// POST /dev/hosts/:id/echo: the dispatch benchmark's baseline, one message over the agent's
// WebSocket and its answer. Development only; an agent that answers wrongly or never cannot hang it.

const echo = (hostId: string, env?: typeof PRODUCTION) => call(`/dev/hosts/${hostId}/echo`, { method: "POST", ...(env ? { env } : {}) });

describe("development's echo to a host's agent", () => {
  it("does not exist in the production configuration: 404, and nothing reaches the agent", async () => {
    const host = await enrolledHost(await operatorCookie());
    const agent = await connectedAgent(host);
    await expectError(await echo(host.hostId, PRODUCTION), 404, "not_found");
    // The next message the agent sees is the development echo sent after it, not one from the 404.
    const answered = echo(host.hostId);
    const sent = await agent.nextOfType<{ id: string }>("echo");
    agent.send({ type: "echo.reply", id: sent.id });
    expect((await answered).status).toBe(200);
    expect(agent.messages.filter((message: any) => message?.type === "echo")).toEqual([]);
  });

  it("sends one echo over the agent's connection and answers once the agent replies with its id", async () => {
    const host = await enrolledHost(await operatorCookie());
    const agent = await connectedAgent(host);
    const answered = echo(host.hostId);
    const sent = await agent.nextOfType<{ type: string; id: string }>("echo");
    expect(Object.keys(sent).sort()).toEqual(["id", "type"]);
    agent.send({ type: "echo.reply", id: sent.id });
    const response = await answered;
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ id: sent.id });
  });

  it("answers 409 for a host whose agent is not connected", async () => {
    const host = await enrolledHost(await operatorCookie());
    await expectError(await echo(host.hostId), 409, "host_not_connected");
    await expectError(await echo("no-such-host"), 409, "host_not_connected");
  });

  it("times out cleanly (504) when a compromised agent never answers or answers another id; the connection stays up", async () => {
    const host = await enrolledHost(await operatorCookie());
    const agent = await connectedAgent(host);
    const silent = echo(host.hostId);
    await agent.nextOfType("echo");
    await expectError(await silent, 504, "agent_timeout");

    const misanswered = echo(host.hostId);
    await agent.nextOfType("echo");
    agent.send({ type: "echo.reply", id: "made-up" });
    await expectError(await misanswered, 504, "agent_timeout");
    expect(agent.closed).toBeNull();

    // A late reply to an echo that timed out is ignored too; the next echo works.
    const next = echo(host.hostId);
    const sent = await agent.nextOfType<{ id: string }>("echo");
    agent.send({ type: "echo.reply", id: sent.id });
    expect((await next).status).toBe(200);
  });

  it("a malformed reply is an invalid message: the connection is closed as for any other", async () => {
    const host = await enrolledHost(await operatorCookie());
    const agent = await connectedAgent(host);
    const pending = echo(host.hostId);
    const sent = await agent.nextOfType<{ id: string }>("echo");
    agent.send({ type: "echo.reply", id: sent.id, extra: true });
    expect((await agent.waitClosed()).code).toBe(CLOSE.INVALID_MESSAGE);
    await expectError(await pending, 504, "agent_timeout");
  });
});
