// What an import's host may tell the homeserver's owner when it refuses their archive: these
// sentences, their blanks filled from the archive (a server name, a number). The Worker shows a
// host's reason only when it is one of them; anything else stays in the job, for operators, so a
// host that is not ours cannot write words of its own onto our pages.

/** A blank and what may fill it: a detail is one line from the archive or its tools, with no link in it. */
const BLANKS: Record<string, string> = {
  "{name}": "[A-Za-z0-9.-]{1,253}",
  "{number}": "[0-9]{1,12}(?:\\.[0-9]{1,6})?",
  "{detail}": "(?:(?!https?:|www\\.)[^\\n]){1,400}",
};

export const IMPORT_REFUSALS = [
  // The archive's, refused before anything is made or with everything made removed:
  "the archive is of {name}, not {name}",
  "the archive is an encrypted export: its passphrase is needed to import it",
  "the passphrase does not open this export",
  "the archive is encrypted to a key, not to a passphrase: it is not a Berth export",
  "the export is truncated or corrupted ({detail})",
  "the archive unpacks to more than the plan's storage ({number} GiB)",
  "the archive cannot be imported: {detail}",
  "the archive is neither a Berth export nor a Synapse archive (a tar file, gzip-compressed or not)",
  "the export holds no signing key of {name}",
  "the archive's {name}.signing.key is not a Synapse ed25519 signing key",
  "the archive's database does not fit in the plan's storage ({number} GiB)",
  "the archive's database could not be restored ({detail})",
  "the archive's database is not a Synapse database (it has no schema_version table)",
  "the archive's database is at Synapse schema version {number}, newer than this host's Synapse understands ({number}): it can be imported once Berth runs a Synapse that new",
  "the archive's database is at Synapse schema version {number}, older than the oldest this host's Synapse upgrades from ({number}; it runs {number}): upgrade your Synapse to a release at schema version {number} or newer, then make the archive again",
  "the archive's homeserver has {number} users, more than the plan's limit of {number}",
  "the archive's homeserver has {number} users: with the admin account Berth adds, more than the plan's limit of {number}",
  // What went wrong otherwise, in our words (the host's log has the details):
  "the import did not finish in the time it has; nothing of it was kept",
  "the archive does not fit in the plan's storage ({number} GiB)",
  "the uploaded archive could not be downloaded to the host; nothing of it was kept",
  "Synapse did not start on the archive's database (its migrations or its data failed); nothing of it was kept",
  "the homeserver could not be made on its host; nothing of it was kept",
] as const;

export type ImportRefusal = (typeof IMPORT_REFUSALS)[number];

const escapeRegExp = (text: string) => text.replace(/[.*+?^$()|[\]\\]/g, "\\$&");
const PATTERNS = IMPORT_REFUSALS.map(
  (template) =>
    new RegExp(
      `^${template
        .split(/(\{[a-z]+\})/)
        .map((piece) => BLANKS[piece] ?? escapeRegExp(piece))
        .join("")}$`,
    ),
);

/** The host's reason when it is one of the refusals, else null. */
export function importRefusalText(message: string): string | null {
  const sentence = message.trim();
  return PATTERNS.some((pattern) => pattern.test(sentence)) ? sentence : null;
}
