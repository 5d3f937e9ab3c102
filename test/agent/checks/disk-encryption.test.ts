// The disk-encryption check from what the agent detected: an encrypted data root holds, naming its
// devices and each crypt layer's cipher (and nothing of the key beside it in the kernel's table);
// a development host's unencrypted disk fails, saying it is one; a production host's fails.
import { afterEach, describe, expect, it } from "vitest";
import { hostCheckOutcomeSchema } from "../../../protocol/checks.ts";
import { checkDiskEncryption } from "../../../agent/checks/disk-encryption.ts";
import { detectDiskEncryption } from "../../../agent/disk-encryption.ts";
import { VDA, VDA2, fakeSysfs, mountinfo } from "../fake-sysfs.ts";
import { runCleanups, tempDir } from "../helpers.ts";

afterEach(runCleanups);

const KEY = `:64:logon:cryptsetup:${"f".repeat(36)}-d0`;

describe("the disk-encryption check", () => {
  it("holds on a LUKS2 data root, with its devices and the cipher the kernel uses", async () => {
    const sysfsRoot = fakeSysfs([
      VDA,
      VDA2,
      { name: "dm-0", path: "virtual/block/dm-0", majmin: "253:0", dmUuid: "CRYPT-LUKS2-0123456789abcdef0123456789abcdef-cryptdata", slaves: ["vda2"] },
    ]);
    const found = detectDiskEncryption(tempDir(), { sysfsRoot, mountinfoPath: mountinfo([["253:0", "/", "ext4", "/dev/mapper/cryptdata"]]) });
    const asked: string[] = [];
    const outcome = await checkDiskEncryption(found, {
      sysfsRoot,
      deviceMapperTable: async (name) => {
        asked.push(name);
        return `0 41940992 crypt aes-xts-plain64 ${KEY} 0 254:2 32768 1 allow_discards\n`;
      },
    });
    expect(hostCheckOutcomeSchema.parse(outcome)).toEqual({
      checkId: "disk-encryption",
      result: "holds",
      evidence: {
        summary: "The data is on an encrypted device (aes-xts-plain64).",
        facts: [
          { label: "Devices", value: "dm-0 (crypt), vda2" },
          { label: "Cipher of dm-0 (cryptdata)", value: "aes-xts-plain64" },
        ],
      },
    });
    expect(asked).toEqual(["cryptdata"]);
    expect(JSON.stringify(outcome)).not.toContain("logon");
  });

  it("fails on a development host allowed to run unencrypted, saying so", async () => {
    const outcome = await checkDiskEncryption({ dataRoot: "/var/lib/berth", encrypted: false, devices: ["vda2"], allowUnencrypted: true });
    expect(outcome.result).toBe("fails");
    expect(outcome.evidence.summary).toBe("This is a development host, allowed to run without disk encryption: the data is on an unencrypted disk.");
    expect(outcome.evidence.facts).toEqual([{ label: "Devices", value: "vda2" }]);
    expect(JSON.stringify(outcome)).not.toContain("/var/lib/berth");
  });

  it("fails on an unencrypted disk without the development override", async () => {
    const outcome = await checkDiskEncryption({ dataRoot: "/var/lib/berth", encrypted: false, devices: ["vda2"], allowUnencrypted: false });
    expect(outcome).toMatchObject({ result: "fails", evidence: { summary: "The data is on a disk that is not encrypted." } });
  });

  it("throws (the runner's could_not_check) when a crypt layer's table is not a crypt target", async () => {
    const sysfsRoot = fakeSysfs([VDA, VDA2, { name: "dm-0", path: "virtual/block/dm-0", majmin: "253:0", dmUuid: "CRYPT-PLAIN-cryptdata", slaves: ["vda2"] }]);
    const found = { dataRoot: "/data", encrypted: true, devices: ["dm-0 (crypt)", "vda2"], allowUnencrypted: false };
    await expect(checkDiskEncryption(found, { sysfsRoot, deviceMapperTable: async () => "0 100 linear 254:2 0\n" })).rejects.toThrow(/not a crypt target/);
  });
});
