// A fake /sys and mount table for the disk-encryption tests: just what detectDiskEncryption (and
// the disk-encryption check, for a crypt layer's name) reads.
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { tempDir } from "./helpers.ts";

export interface Device {
  name: string;
  /** Path below sys/devices. */
  path: string;
  majmin: string;
  dmUuid?: string;
  slaves?: string[];
}

/** A fake /sys with just what the detection reads: dev/block, block, class/block, devices/…/{dm,slaves}. */
export function fakeSysfs(devices: Device[]): string {
  const root = tempDir("berth-sysfs-");
  const sys = join(root, "sys");
  const dirOf = (d: Device) => join(sys, "devices", d.path);
  const link = (target: string, at: string) => {
    mkdirSync(dirname(at), { recursive: true });
    symlinkSync(relative(dirname(at), target), at); // relative, as the kernel makes them
  };
  for (const d of devices) {
    mkdirSync(dirOf(d), { recursive: true });
    writeFileSync(join(dirOf(d), "dev"), `${d.majmin}\n`);
    link(dirOf(d), join(sys, "dev", "block", d.majmin));
    link(dirOf(d), join(sys, "class", "block", d.name));
    if (!d.path.match(/\/vd[a-z]\/vd[a-z]\d+$/)) link(dirOf(d), join(sys, "block", d.name));
    if (d.dmUuid !== undefined) {
      mkdirSync(join(dirOf(d), "dm"), { recursive: true });
      writeFileSync(join(dirOf(d), "dm", "uuid"), `${d.dmUuid}\n`);
      writeFileSync(join(dirOf(d), "dm", "name"), `${d.name === "dm-0" ? "cryptdata" : `vg-${d.name}`}\n`);
    }
    mkdirSync(join(dirOf(d), "slaves"), { recursive: true });
  }
  for (const d of devices) {
    for (const slave of d.slaves ?? []) {
      const target = devices.find((x) => x.name === slave)!;
      link(dirOf(target), join(dirOf(d), "slaves", slave));
    }
  }
  return sys;
}

export const VDA = { name: "vda", path: "pci0000:00/0000:00:04.0/virtio1/block/vda", majmin: "254:0" };
export const VDA1 = { name: "vda1", path: `${VDA.path}/vda1`, majmin: "254:1" };
export const VDA2 = { name: "vda2", path: `${VDA.path}/vda2`, majmin: "254:2" };
export const VDB = { name: "vdb", path: "pci0000:00/0000:00:05.0/virtio2/block/vdb", majmin: "254:16" };

export function mountinfo(lines: Array<[majmin: string, mountPoint: string, fsType: string, source: string]>): string {
  const dir = tempDir("berth-mountinfo-");
  const file = join(dir, "mountinfo");
  writeFileSync(file, lines.map(([mm, mp, fs, src], i) => `${20 + i} 1 ${mm} / ${mp} rw,relatime shared:1 - ${fs} ${src} rw\n`).join(""));
  return file;
}
