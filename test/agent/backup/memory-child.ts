// Backs up a directory and restores it again in a process of its own, so a test
// can see the peak resident memory (VmHWM) each direction adds: it must stay
// bounded whatever the backup's size. Options come as JSON in argv[2]; the
// result is one JSON line.
import { createReadStream, createWriteStream, readFileSync, writeFileSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import { backupStream, restoreStream } from "../../../agent/backup/backup.ts";
import { MANIFEST, pseudoRandomChunks, serverFiles } from "./helpers.ts";

const options = JSON.parse(process.argv[2]!) as {
  dataDir: string;
  dumpBytes: number;
  output: string;
  restoreTo: string;
  recipient: string;
  identity: string;
};

function statusKiB(field: "VmRSS" | "VmHWM"): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(readFileSync("/proc/self/status", "utf8"))![1]);
}

/** How far the resident size rises above where it was while `task` runs, in MiB. */
async function peakGrowthMiB(task: () => Promise<unknown>): Promise<number> {
  writeFileSync("/proc/self/clear_refs", "5"); // VmHWM starts again from the current RSS
  const before = statusKiB("VmRSS");
  await task();
  return (statusKiB("VmHWM") - before) / 1024;
}

const backup = await peakGrowthMiB(() =>
  pipeline(
    backupStream({
      manifest: MANIFEST,
      dump: pseudoRandomChunks(options.dumpBytes, "dump"),
      files: serverFiles(options.dataDir),
      recipient: options.recipient,
    }),
    createWriteStream(options.output),
  ),
);
const restore = await peakGrowthMiB(() => restoreStream(createReadStream(options.output), options.identity, options.restoreTo));
process.stdout.write(`${JSON.stringify({ backup, restore })}\n`);
