import { afterEach, describe, expect, it } from "vitest";
import { diskEncryptionSchema } from "../../protocol/messages.ts";
import { deviceNumber, detectDiskEncryption, parseMountinfo } from "../../agent/disk-encryption.ts";
import { VDA, VDA1, VDA2, VDB, fakeSysfs, mountinfo } from "./fake-sysfs.ts";
import { runCleanups, tempDir } from "./helpers.ts";

afterEach(runCleanups);

function detect(sysfsRoot: string, mountinfoPath: string, dataRoot = tempDir()) {
  const report = detectDiskEncryption(dataRoot, { sysfsRoot, mountinfoPath, allowUnencrypted: false });
  expect(diskEncryptionSchema.safeParse(report).success).toBe(true);
  return report;
}

describe("disk encryption detection (fake sysfs)", () => {
  it("plain disk partition: not encrypted", () => {
    const sys = fakeSysfs([VDA, VDA1, VDA2]);
    const report = detect(sys, mountinfo([["254:2", "/", "ext4", "/dev/vda2"]]));
    expect(report).toMatchObject({ encrypted: false, devices: ["vda2"], allowUnencrypted: false });
  });

  it("dm-crypt (LUKS2) over a partition: encrypted", () => {
    const sys = fakeSysfs([
      VDA,
      VDA2,
      { name: "dm-0", path: "virtual/block/dm-0", majmin: "253:0", dmUuid: "CRYPT-LUKS2-0123456789abcdef0123456789abcdef-cryptdata", slaves: ["vda2"] },
    ]);
    const report = detect(sys, mountinfo([["253:0", "/", "ext4", "/dev/mapper/cryptdata"]]));
    expect(report).toMatchObject({ encrypted: true, devices: ["dm-0 (crypt)", "vda2"] });
  });

  it("plain dm-crypt (CRYPT-PLAIN) over a whole disk: encrypted", () => {
    const sys = fakeSysfs([VDB, { name: "dm-0", path: "virtual/block/dm-0", majmin: "253:0", dmUuid: "CRYPT-PLAIN-cryptdata", slaves: ["vdb"] }]);
    expect(detect(sys, mountinfo([["253:0", "/", "xfs", "/dev/mapper/cryptdata"]]))).toMatchObject({ encrypted: true });
  });

  it("LVM over dm-crypt: encrypted", () => {
    const sys = fakeSysfs([
      VDA,
      VDA2,
      { name: "dm-0", path: "virtual/block/dm-0", majmin: "253:0", dmUuid: "CRYPT-LUKS2-aaaa-cryptpv", slaves: ["vda2"] },
      { name: "dm-1", path: "virtual/block/dm-1", majmin: "253:1", dmUuid: "LVM-Xyz123", slaves: ["dm-0"] },
    ]);
    const report = detect(sys, mountinfo([["253:1", "/", "ext4", "/dev/mapper/vg-data"]]));
    expect(report).toMatchObject({ encrypted: true, devices: ["dm-1 (lvm)", "dm-0 (crypt)", "vda2"] });
  });

  it("dm-linear (LVM) without crypt: not encrypted", () => {
    const sys = fakeSysfs([VDA, VDA2, { name: "dm-0", path: "virtual/block/dm-0", majmin: "253:0", dmUuid: "LVM-abc", slaves: ["vda2"] }]);
    const report = detect(sys, mountinfo([["253:0", "/", "ext4", "/dev/mapper/vg-data"]]));
    expect(report).toMatchObject({ encrypted: false, devices: ["dm-0 (lvm)", "vda2"] });
  });

  it("LVM spanning one encrypted and one plain disk: not encrypted (data may land on the plain one)", () => {
    const sys = fakeSysfs([
      VDA,
      VDA2,
      VDB,
      { name: "dm-0", path: "virtual/block/dm-0", majmin: "253:0", dmUuid: "CRYPT-LUKS2-aaaa-cryptpv", slaves: ["vda2"] },
      { name: "dm-1", path: "virtual/block/dm-1", majmin: "253:1", dmUuid: "LVM-span", slaves: ["dm-0", "vdb"] },
    ]);
    const report = detect(sys, mountinfo([["253:1", "/", "ext4", "/dev/mapper/vg-span"]]));
    expect(report.encrypted).toBe(false);
    expect(report.devices).toEqual(["dm-1 (lvm)", "dm-0 (crypt)", "vda2", "vdb"]);
  });

  it("uses the longest matching mount, even for a data root that does not exist yet", () => {
    const sys = fakeSysfs([
      VDA,
      VDA1,
      VDA2,
      { name: "dm-0", path: "virtual/block/dm-0", majmin: "253:0", dmUuid: "CRYPT-LUKS2-x-cryptdata", slaves: ["vda2"] },
    ]);
    const info = mountinfo([
      ["254:1", "/", "ext4", "/dev/vda1"],
      ["253:0", "/nonexistent-berth-mount", "ext4", "/dev/mapper/cryptdata"],
    ]);
    expect(detect(sys, info, "/nonexistent-berth-mount/berth/data")).toMatchObject({ encrypted: true, dataRoot: "/nonexistent-berth-mount/berth/data" });
    expect(detect(sys, info, "/nonexistent-berth-mount-other/data")).toMatchObject({ encrypted: false, devices: ["vda1"] });
  });

  it("finds the device by its /dev/mapper name when the mount reports an anonymous device (btrfs)", () => {
    const sys = fakeSysfs([VDA, VDA2, { name: "dm-0", path: "virtual/block/dm-0", majmin: "253:0", dmUuid: "CRYPT-LUKS2-x-cryptdata", slaves: ["vda2"] }]);
    const report = detect(sys, mountinfo([["0:45", "/", "btrfs", "/dev/mapper/cryptdata"]]));
    expect(report).toMatchObject({ encrypted: true, devices: ["dm-0 (crypt)", "vda2"] });
  });

  it("a filesystem without a block device (tmpfs) is not encrypted", () => {
    const sys = fakeSysfs([VDA]);
    const report = detect(sys, mountinfo([["0:30", "/", "tmpfs", "tmpfs"]]));
    expect(report.encrypted).toBe(false);
    expect(report.devices[0]).toMatch(/tmpfs/);
  });

  it("reports allowUnencrypted as given", () => {
    const sys = fakeSysfs([VDA, VDA2]);
    const info = mountinfo([["254:2", "/", "ext4", "/dev/vda2"]]);
    expect(detectDiskEncryption("/data", { sysfsRoot: sys, mountinfoPath: info, allowUnencrypted: true })).toMatchObject({
      encrypted: false,
      allowUnencrypted: true,
    });
  });

  it("parses mountinfo escapes and decodes dev_t numbers", () => {
    const [entry] = parseMountinfo("36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n");
    expect(entry).toEqual({ device: "98:0", mountPoint: "/mnt/with space", fsType: "ext3", source: "/dev/root" });
    expect(deviceNumber(254 * 256 + 2)).toBe("254:2");
    // major 259, minor 76805 (= 5 | 300 << 8): the minor's high bits sit above the major's in dev_t.
    expect(deviceNumber(5 | (259 << 8) | (76800 * 4096))).toBe("259:76805");
  });

  it("on this machine, reports a well-formed result for the real data root", () => {
    const report = detectDiskEncryption("/var/lib/berth");
    expect(diskEncryptionSchema.parse(report).devices.length).toBeGreaterThan(0);
  });
});
