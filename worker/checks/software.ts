import type { CheckEvidence, CheckResultKind } from "./registry";

// The software check: the Synapse a homeserver runs, against the release we ship and the releases
// that fixed security problems. The Worker decides it from the version the host reports.

type Version = readonly [number, number, number];

/**
 * Synapse releases that fixed a security problem, oldest first: each release's own security
 * section in Synapse's changelog (CHANGES.md), with its advisories' CVEs.
 */
export const SYNAPSE_SECURITY_FIXES: readonly { version: string; fixes: string }[] = [
  {
    version: "1.105.1",
    fixes: "CVE-2024-31208: members of a room on another server could fill the disk and load the CPU through a weakness in auth chain indexing",
  },
  {
    version: "1.120.1",
    fixes:
      "CVE-2024-52805, CVE-2024-52815, CVE-2024-53863, CVE-2024-53867: memory exhaustion through unsupported content types, invites over federation that break a user's sync, thumbnails of unexpected file formats, and sliding sync leaking room state to former members",
  },
  { version: "1.127.1", fixes: "CVE-2025-30355: malformed events from another server could stop federation (exploited in the wild)" },
  { version: "1.135.2", fixes: "CVE-2025-49090: room version 12, the coordinated Matrix security release fixing weaknesses of state resolution" },
  { version: "1.139.1", fixes: "CVE-2025-61672: device keys were not validated, so a user of the homeserver could degrade its federation" },
];

/** "1.163.2", "v1.163.2" or "1.163.2rc1 (…)": its first three numbers; null when it does not start with a version. */
export function parseSynapseVersion(text: string): Version | null {
  const match = /^v?(\d{1,4})\.(\d{1,4})\.(\d{1,4})/.exec(text.trim());
  return match ? [Number(match[1]), Number(match[2]), Number(match[3])] : null;
}

/** The version an image reference pins by its tag (matrixdotorg/synapse:v1.163.2); null for a tag such as `latest`. */
export function imageVersion(image: string): Version | null {
  const tag = /:([^:/@]+)(@.*)?$/.exec(image)?.[1];
  return tag ? parseSynapseVersion(tag) : null;
}

function compare(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

const written = (version: Version) => version.join(".");

/** What the host reported of the running Synapse, or undefined when it did not answer. */
export interface RunningSynapse {
  version: string;
  image: string;
}

/**
 * The verdict: a version we cannot read is not checked; an older one than we ship fails when a
 * release between the two fixed a security problem (naming the newest such release), and holds
 * with "an update is available" otherwise. When the image we ship does not pin a version
 * (development builds), running that very image is running the release we ship.
 */
export function softwareVerdict(running: RunningSynapse | undefined, shippedImage: string): { result: CheckResultKind; evidence: CheckEvidence } {
  if (!running) {
    return { result: "could_not_check", evidence: { summary: "Synapse did not say which version it runs.", facts: [] } };
  }
  const version = parseSynapseVersion(running.version);
  const facts = [
    { label: "Synapse version", value: running.version },
    { label: "Image", value: running.image },
  ];
  if (!version) {
    return { result: "could_not_check", evidence: { summary: `We cannot read the version Synapse reports ("${running.version}").`, facts } };
  }
  const shipped = imageVersion(shippedImage);
  if (!shipped) {
    return running.image === shippedImage
      ? { result: "holds", evidence: { summary: `Synapse ${written(version)} runs from the image we ship.`, facts } }
      : { result: "could_not_check", evidence: { summary: "The release we ship names no version to compare with.", facts } };
  }
  const withShipped = [...facts, { label: "Release we ship", value: written(shipped) }];
  if (compare(version, shipped) >= 0) {
    return { result: "holds", evidence: { summary: `Synapse ${written(version)} is the newest release we ship.`, facts: withShipped } };
  }
  const missed = SYNAPSE_SECURITY_FIXES.filter((fix) => {
    const fixed = parseSynapseVersion(fix.version)!;
    return compare(version, fixed) < 0 && compare(fixed, shipped) <= 0;
  }).at(-1);
  if (missed) {
    return {
      result: "fails",
      evidence: {
        summary: `Synapse ${written(version)} is older than ${missed.version}, which fixed a security problem; the update to ${written(shipped)} is due.`,
        facts: [...withShipped, { label: `Fixed in ${missed.version}`, value: missed.fixes }],
      },
    };
  }
  return {
    result: "holds",
    evidence: { summary: `Synapse ${written(version)} has every security fix we know of; an update to ${written(shipped)} is available.`, facts: withShipped },
  };
}
