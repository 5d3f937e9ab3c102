// A self-hosted Synapse's archive, made as README.md says: a POSIX tar (plain or gzip) holding
// exactly synapse.dump (pg_dump --format=custom), one <server name>.signing.key and, optionally,
// media_store/. Extracted into the layout of a Berth backup's archive (database/pg_dump,
// synapse/<key>, synapse/media_store/…), so that an import goes on from either alike. The tar
// reader refuses links, devices and GNU tar's own format; the names are checked here, so nothing
// is written outside the target directory.
import { DUMP_FILE, entryParts, extractInto, type ExtractionTarget } from "./archive.ts";
import { ArchiveError, readTar } from "./tar.ts";

export const SYNAPSE_DUMP = "synapse.dump";
export const MEDIA_STORE = "media_store";
const SIGNING_KEY = /^(.+)\.signing\.key$/;

export interface ExtractedSynapseArchive {
  /** The server name its signing key's file is named after. */
  serverName: string;
  /** Media files, and the dump's size. */
  mediaFiles: number;
  dumpBytes: number;
}

/** The name as tar -C dir … . writes it too ("./synapse.dump"); "." itself is nothing. */
function withoutDotSlash(name: string): string {
  return name.replace(/^(\.\/)+/, "");
}

async function extractEntries(tar: AsyncIterable<Buffer>, target: ExtractionTarget): Promise<ExtractedSynapseArchive> {
  let serverName: string | undefined;
  let dumpBytes: number | undefined;
  let mediaFiles = 0;
  for await (const entry of readTar(tar)) {
    const name = withoutDotSlash(entry.name);
    if (name === "" || name === ".") continue;
    const parts = entryParts(name);
    if (parts[0] === MEDIA_STORE) {
      const where = ["synapse", ...parts];
      if (entry.type === "directory") await target.directory(where);
      else {
        await target.write(where, entry.body);
        mediaFiles++;
      }
      continue;
    }
    const key = parts.length === 1 && entry.type === "file" ? SIGNING_KEY.exec(name) : null;
    if (key) {
      if (serverName !== undefined) throw new ArchiveError(`the archive holds two signing keys (of ${serverName} and of ${key[1]})`);
      serverName = key[1]!;
      await target.write(["synapse", name], entry.body);
    } else if (name === SYNAPSE_DUMP && entry.type === "file") {
      await target.write(DUMP_FILE.split("/"), entry.body);
      dumpBytes = entry.size;
    } else {
      throw new ArchiveError(`the archive holds ${name}: a Synapse archive holds only ${SYNAPSE_DUMP}, <server name>.signing.key and ${MEDIA_STORE}/`);
    }
  }
  if (dumpBytes === undefined) throw new ArchiveError(`the archive holds no ${SYNAPSE_DUMP}`);
  if (serverName === undefined) throw new ArchiveError("the archive holds no <server name>.signing.key");
  return { serverName, mediaFiles, dumpBytes };
}

/**
 * Extracts a Synapse archive's tar bytes into targetDir, which must not exist yet (made 0700,
 * files 0600, this process's: the caller hands them on). On any failure targetDir is gone again.
 */
export function extractSynapseArchive(tar: AsyncIterable<Buffer>, targetDir: string): Promise<ExtractedSynapseArchive> {
  return extractInto(targetDir, (target) => extractEntries(tar, target));
}
