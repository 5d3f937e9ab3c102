// A homeserver's Matrix server name and the host it is served at are two things: the proxy route,
// its certificate and the local federation hosts file follow the served host.
import { describe, expect, it } from "vitest";
import { servedHostOf } from "../../../agent/homeserver/records.ts";

describe("the served host", () => {
  it("is the public base URL's host name, whatever the Matrix server name", () => {
    expect(servedHostOf({ publicBaseUrl: "https://acme-hs.berth.example/" })).toBe("acme-hs.berth.example");
    expect(servedHostOf({ publicBaseUrl: "https://alice.berth.example:8443/" })).toBe("alice.berth.example");
  });
});
