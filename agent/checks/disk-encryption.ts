// The disk-encryption check: the data root (where every homeserver's data lives) is on an
// encrypted device, as the agent detected it (agent/disk-encryption.ts), with the cipher the
// kernel uses for each crypt layer. A development host started with --allow-unencrypted-data-root
// fails, saying so: the promise is not kept on it (docs/decisions.md).
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { HostCheckOutcome } from "../../protocol/checks.ts";
import type { DiskEncryption } from "../../protocol/messages.ts";

export interface DiskEncryptionCheckOptions {
  /** Where sysfs is mounted. Default "/sys". */
  sysfsRoot?: string;
  /** The device-mapper table of a mapped device (dmsetup table <name>). */
  deviceMapperTable?: (name: string) => Promise<string>;
}

/** "dm-0 (crypt)" as detectDiskEncryption lists a crypt layer. */
const CRYPT_DEVICE = /^(dm-\d+) \(crypt\)$/;

export async function checkDiskEncryption(found: DiskEncryption, options: DiskEncryptionCheckOptions = {}): Promise<HostCheckOutcome> {
  const devices = { label: "Devices", value: found.devices.join(", ") || "(none found)" };
  if (!found.encrypted) {
    const summary = found.allowUnencrypted
      ? "This is a development host, allowed to run without disk encryption: the data is on an unencrypted disk."
      : "The data is on a disk that is not encrypted.";
    return { checkId: "disk-encryption", result: "fails", evidence: { summary, facts: [devices] } };
  }
  const ciphers = await cryptCiphers(found.devices, options);
  const summary = `The data is on an encrypted device${ciphers.length > 0 ? ` (${[...new Set(ciphers.map((c) => c.cipher))].join(", ")})` : ""}.`;
  const facts = [devices, ...ciphers.map(({ device, cipher }) => ({ label: `Cipher of ${device}`, value: cipher }))];
  return { checkId: "disk-encryption", result: "holds", evidence: { summary, facts } };
}

/** Each crypt layer's cipher, from its device-mapper table ("<start> <length> crypt <cipher> <key> …": only the cipher is kept). */
async function cryptCiphers(devices: string[], options: DiskEncryptionCheckOptions): Promise<Array<{ device: string; cipher: string }>> {
  const table = options.deviceMapperTable ?? dmsetupTable;
  const ciphers: Array<{ device: string; cipher: string }> = [];
  for (const entry of devices) {
    const device = CRYPT_DEVICE.exec(entry)?.[1];
    if (!device) continue;
    const name = readFileSync(join(options.sysfsRoot ?? "/sys", "block", device, "dm", "name"), "utf8").trim();
    const fields = (await table(name)).trim().split(/\s+/);
    if (fields[2] !== "crypt" || !fields[3]) throw new Error(`the device-mapper table of ${device} is not a crypt target`);
    ciphers.push({ device: `${device} (${name})`, cipher: fields[3] });
  }
  return ciphers;
}

function dmsetupTable(name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("dmsetup", ["table", "--", name], { timeout: 10_000 }, (error, stdout) => (error ? reject(error) : resolve(stdout)));
  });
}
