// Is the data root on dm-crypt? Find the filesystem holding the data root in
// mountinfo, then walk its block device down through sysfs (`slaves/`): a
// device-mapper node whose dm/uuid starts with "CRYPT-" is dm-crypt (LUKS:
// "CRYPT-LUKS2-…", plain: "CRYPT-PLAIN-…"). Encrypted means every path from the
// filesystem's device down to a physical disk passes through a crypt layer, so
// an LVM volume spanning one encrypted and one plain disk does not count.
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { basename, dirname, join, resolve, sep } from "node:path";
import type { DiskEncryption } from "../protocol/messages.ts";

export interface DiskEncryptionOptions {
  /** Where sysfs is mounted. Default "/sys". */
  sysfsRoot?: string;
  /** The mount table. Default "/proc/self/mountinfo". */
  mountinfoPath?: string;
  /** Started with --allow-unencrypted-data-root. */
  allowUnencrypted?: boolean;
}

export interface MountEntry {
  mountPoint: string;
  /** "major:minor" as the kernel reports it (0:N for filesystems without a block device). */
  device: string;
  fsType: string;
  source: string;
}

const MAX_DEVICES = 16;

export function detectDiskEncryption(dataRoot: string, options: DiskEncryptionOptions = {}): DiskEncryption {
  const sysfs = options.sysfsRoot ?? "/sys";
  const report = (encrypted: boolean, devices: string[]): DiskEncryption => ({
    dataRoot,
    encrypted,
    devices: devices.slice(0, MAX_DEVICES).map((d) => d.slice(0, 256)),
    allowUnencrypted: options.allowUnencrypted ?? false,
  });

  let mounts: MountEntry[];
  try {
    mounts = parseMountinfo(readFileSync(options.mountinfoPath ?? "/proc/self/mountinfo", "utf8"));
  } catch {
    return report(false, ["(mount table unreadable)"]);
  }
  const mount = findMount(mounts, physicalPath(dataRoot));
  if (!mount) return report(false, ["(no mount found)"]);

  const deviceDir = blockDeviceDir(sysfs, mount);
  if (!deviceDir) return report(false, [`${mount.source} (${mount.fsType}, no block device)`]);

  const devices: string[] = [];
  const encrypted = walk(deviceDir, devices, new Set());
  return report(encrypted, devices);
}

/** Parses /proc/<pid>/mountinfo (see proc(5)). */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const [left, right] = splitOnce(line, " - ");
    if (right === undefined) continue;
    const fields = left.split(" ");
    const after = right.split(" ");
    const device = fields[2];
    const mountPoint = fields[4];
    if (!device || !mountPoint) continue;
    entries.push({
      device,
      mountPoint: unescapeMountinfo(mountPoint),
      fsType: after[0] ?? "",
      source: unescapeMountinfo(after[1] ?? ""),
    });
  }
  return entries;
}

/** The mount holding `path`: the longest mount point that is `path` or an ancestor; the last one when stacked. */
export function findMount(mounts: MountEntry[], path: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const mount of mounts) {
    if (!isWithin(path, mount.mountPoint)) continue;
    if (!best || mount.mountPoint.length >= best.mountPoint.length) best = mount;
  }
  return best;
}

function isWithin(path: string, dir: string): boolean {
  if (dir === "/") return path.startsWith("/");
  return path === dir || path.startsWith(dir + sep);
}

/** The real path of `p`, resolving symlinks of the part that exists (the data root may not exist yet). */
function physicalPath(p: string): string {
  let existing = resolve(p);
  const rest: string[] = [];
  while (!existsSync(existing)) {
    const parent = dirname(existing);
    if (parent === existing) break;
    rest.unshift(basename(existing));
    existing = parent;
  }
  let real = existing;
  try {
    real = realpathSync(existing);
  } catch {
    // keep the lexical path
  }
  return rest.length ? join(real, ...rest) : real;
}

/** The sysfs directory of the mount's block device, or undefined when it has none (tmpfs, overlay, nfs…). */
function blockDeviceDir(sysfs: string, mount: MountEntry): string | undefined {
  const byNumber = join(sysfs, "dev", "block", mount.device);
  if (existsSync(byNumber)) return realpathSync(byNumber);
  // btrfs and others report an anonymous 0:N device: go by the mount source instead.
  const source = mount.source;
  if (!source.startsWith("/dev/")) return undefined;
  try {
    const dir = join(sysfs, "dev", "block", deviceNumber(statSync(source).rdev));
    if (existsSync(dir)) return realpathSync(dir);
  } catch {
    // not a device node here; try by name
  }
  const name = basename(source);
  if (source.startsWith("/dev/mapper/")) {
    for (const dm of safeReaddir(join(sysfs, "block"))) {
      if (readTrimmed(join(sysfs, "block", dm, "dm", "name")) === name) return realpathSync(join(sysfs, "block", dm));
    }
  }
  const byName = join(sysfs, "class", "block", name);
  return existsSync(byName) ? realpathSync(byName) : undefined;
}

/** Records the device chain in `out` and returns whether every path below `dir` is encrypted. */
function walk(dir: string, out: string[], seen: Set<string>): boolean {
  if (seen.has(dir)) return false;
  seen.add(dir);
  const name = basename(dir);
  const uuid = readTrimmed(join(dir, "dm", "uuid"));
  const layer = uuid === undefined ? undefined : dmLayer(uuid);
  out.push(layer ? `${name} (${layer})` : name);
  if (layer === "crypt") {
    // Still list what lies below, for the operator; it is encrypted whatever it is.
    for (const slave of slaves(dir)) walk(slave, out, seen);
    return true;
  }
  const below = slaves(dir);
  if (below.length === 0) return false;
  let all = true;
  for (const slave of below) all = walk(slave, out, seen) && all;
  return all;
}

function dmLayer(uuid: string): string {
  if (uuid.startsWith("CRYPT-")) return "crypt";
  if (uuid.startsWith("LVM-")) return "lvm";
  if (/^(part\d+-)?mpath-/.test(uuid)) return "multipath";
  return "dm";
}

function slaves(dir: string): string[] {
  const slavesDir = join(dir, "slaves");
  return safeReaddir(slavesDir)
    .sort()
    .map((name) => {
      try {
        return realpathSync(join(slavesDir, name));
      } catch {
        return undefined;
      }
    })
    .filter((p): p is string => p !== undefined);
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function readTrimmed(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

function splitOnce(text: string, separator: string): [string, string | undefined] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, undefined] : [text.slice(0, at), text.slice(at + separator.length)];
}

function unescapeMountinfo(value: string): string {
  return value.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** "major:minor" of a Linux dev_t (glibc's gnu_dev_major/minor). */
export function deviceNumber(rdev: number): string {
  const high = Math.floor(rdev / 2 ** 32);
  const major = ((rdev >>> 8) & 0xfff) | ((high & 0xfffff000) >>> 0);
  const minor = (rdev & 0xff) | ((rdev >>> 12) & 0xffffff00);
  return `${major >>> 0}:${minor >>> 0}`;
}
