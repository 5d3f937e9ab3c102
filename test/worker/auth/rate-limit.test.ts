import { describe, expect, it } from "vitest";
import { clientNetwork } from "../../../worker/auth/rate-limit";

describe("the client a per-client limit counts", () => {
  it("is an IPv4 address itself", () => {
    expect(clientNetwork("203.0.113.7")).toBe("203.0.113.7");
    expect(clientNetwork("203.0.113.8")).not.toBe(clientNetwork("203.0.113.7"));
  });

  it("is an IPv6 address's /64, however the address is written", () => {
    const network = "2001:db8:1:2::/64";
    for (const address of [
      "2001:db8:1:2::1",
      "2001:0DB8:0001:0002:ffff:ffff:ffff:ffff",
      "2001:db8:1:2:a::b",
      "2001:db8:1:2::5%eth0",
      "2001:db8:1:2:0:0:1.2.3.4",
    ]) {
      expect(clientNetwork(address), address).toBe(network);
    }
    expect(clientNetwork("2001:db8:1:3::1")).toBe("2001:db8:1:3::/64");
    expect(clientNetwork("::1")).toBe("0:0:0:0::/64");
    expect(clientNetwork("2001:db8::")).toBe("2001:db8:0:0::/64");
  });

  it("is an IPv4-mapped IPv6 address's IPv4", () => {
    expect(clientNetwork("::ffff:203.0.113.7")).toBe("203.0.113.7");
    expect(clientNetwork("::ffff:cb00:7107")).toBe("203.0.113.7");
  });

  it("keeps anything else as it came, and a missing address as one unknown client", () => {
    expect(clientNetwork(undefined)).toBe("unknown");
    expect(clientNetwork("")).toBe("unknown");
    expect(clientNetwork("1:2:3")).toBe("1:2:3");
    expect(clientNetwork("1::2::3")).toBe("1::2::3");
    expect(clientNetwork("1:2:3:4:5:6:7:8:9")).toBe("1:2:3:4:5:6:7:8:9");
  });
});
