import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { workerConfig } from "../../../worker/config";
import type { WorkerEnv } from "../../../worker/env";
import { acceptedAddresses, isPublicIpv4, isPublicIpv6 } from "../../../worker/fleet/addresses";
import { PRODUCTION } from "../helpers";

// A host's hello says where its homeservers' names should point. In production only public
// addresses are taken: a compromised host cannot send its customers' clients into a private network.

const production = workerConfig({ ...env, ...PRODUCTION } as WorkerEnv);
const development = workerConfig(env as WorkerEnv);

describe("public addresses", () => {
  it("IPv4: private, shared, loopback, link-local, multicast, reserved and unspecified ones are not public", () => {
    for (const address of [
      "0.0.0.0",
      "10.1.2.3",
      "100.64.0.1",
      "100.127.255.254",
      "127.0.0.1",
      "169.254.1.1",
      "172.16.0.1",
      "172.31.255.255",
      "192.168.1.1",
      "224.0.0.1",
      "255.255.255.255",
    ]) {
      expect(isPublicIpv4(address), address).toBe(false);
    }
    for (const address of ["1.1.1.1", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0", "203.0.113.20"])
      expect(isPublicIpv4(address), address).toBe(true);
  });

  it("IPv6: only global unicast (unspecified, loopback, IPv4-mapped, link-local, ULA and multicast are not)", () => {
    for (const address of ["::", "::1", "::ffff:10.0.0.1", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1"]) expect(isPublicIpv6(address), address).toBe(false);
    for (const address of ["2001:db8::20", "2606:4700::1111", "3fff::1"]) expect(isPublicIpv6(address), address).toBe(true);
  });
});

describe("a hello's addresses", () => {
  it("in production, are refused whole when one is not public; its homeservers then wait", () => {
    expect(acceptedAddresses(production, { ipv4: "10.0.0.5" })).toEqual({ addresses: null, refused: "10.0.0.5 is not a public IPv4 address" });
    expect(acceptedAddresses(production, { ipv4: "203.0.113.5", ipv6: "fd00::5" })).toEqual({
      addresses: null,
      refused: "fd00::5 is not a public IPv6 address",
    });
    expect(acceptedAddresses(production, { ipv4: "203.0.113.5", ipv6: "2001:db8::5" })).toEqual({
      addresses: { ipv4: "203.0.113.5", ipv6: "2001:db8::5" },
      refused: null,
    });
    expect(acceptedAddresses(production, undefined)).toEqual({ addresses: null, refused: null });
  });

  it("in development, may be private: local hosts run on this machine's addresses", () => {
    expect(acceptedAddresses(development, { ipv4: "127.0.0.2" })).toEqual({ addresses: { ipv4: "127.0.0.2" }, refused: null });
  });
});
