import type { PublicAddresses } from "../../protocol/messages";
import { isDevelopment, type WorkerConfig } from "../config";

/** [first address as a number, prefix length] of the IPv4 ranges no customer's name may point at. */
const NON_PUBLIC_IPV4: [string, number][] = [
  ["0.0.0.0", 8], // unspecified, "this network"
  ["10.0.0.0", 8], // RFC 1918
  ["100.64.0.0", 10], // carrier-grade NAT
  ["127.0.0.0", 8], // loopback
  ["169.254.0.0", 16], // link-local
  ["172.16.0.0", 12], // RFC 1918
  ["192.168.0.0", 16], // RFC 1918
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, and the broadcast address
];

function ipv4Number(address: string): number {
  return address.split(".").reduce((value, octet) => value * 256 + Number(octet), 0);
}

export function isPublicIpv4(address: string): boolean {
  const value = ipv4Number(address);
  return NON_PUBLIC_IPV4.every(([first, bits]) => Math.floor(value / 2 ** (32 - bits)) !== Math.floor(ipv4Number(first) / 2 ** (32 - bits)));
}

/**
 * Only global unicast (2000::/3) is public: that leaves out the unspecified and loopback
 * addresses, IPv4-mapped ones (::ffff:10.0.0.1), link-local fe80::/10, ULA fc00::/7 and multicast ff00::/8.
 */
export function isPublicIpv6(address: string): boolean {
  const first = address.startsWith("::") ? 0 : Number.parseInt(address.split(":")[0]!, 16);
  return (first & 0xe000) === 0x2000;
}

/**
 * The public addresses a host's hello reports, as far as we accept them: null when none were
 * reported, or when one of them is not public (in development, local hosts may report private
 * ones). A compromised host then cannot send its homeservers' clients into someone's private
 * network; the addresses it reports only ever reach the records of the homeservers it runs.
 */
export function acceptedAddresses(config: WorkerConfig, reported: PublicAddresses | undefined): { addresses: PublicAddresses | null; refused: string | null } {
  if (!reported) return { addresses: null, refused: null };
  if (!isDevelopment(config)) {
    if (!isPublicIpv4(reported.ipv4)) return { addresses: null, refused: `${reported.ipv4} is not a public IPv4 address` };
    if (reported.ipv6 && !isPublicIpv6(reported.ipv6)) return { addresses: null, refused: `${reported.ipv6} is not a public IPv6 address` };
  }
  return { addresses: reported, refused: null };
}
