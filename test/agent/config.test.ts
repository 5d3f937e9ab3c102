import { describe, expect, it } from "vitest";
import { agentConfigSchema } from "../../agent/config.ts";

describe("agent.json", () => {
  it("redials with a 1 s base and a 15 s cap by default: after an outage every host is back within about 15 s of the control plane", () => {
    const config = agentConfigSchema.parse({
      controlPlaneUrl: "https://berth.example.com",
      hostId: "host_test",
      connectUrl: "wss://berth.example.com/api/agent/connect?host=host_test",
      dataRoot: "/var/lib/berth",
    });
    expect(config).toMatchObject({ reconnectBaseMs: 1_000, reconnectMaxMs: 15_000, heartbeatIntervalMs: 20_000 });
  });
});
