// What an import's host may tell the homeserver's owner when it refuses their archive: these
// sentences, their blanks filled from the archive (a server name, a number). The Worker shows a
// host's reason only when it is one of them; anything else stays in the job, for operators, so a
// host that is not ours cannot write words of its own onto our pages.

/** A blank and what may fill it. */
const BLANKS: Record<string, string> = {
  "{name}": "[A-Za-z0-9.-]{1,253}",
  "{number}": "[0-9]{1,12}",
};

export const IMPORT_REFUSALS = [
  "the archive is of {name}, not {name}",
  "the archive is encrypted: type the passphrase it was exported with",
  "the passphrase does not open this export",
  "the export is truncated or corrupted",
  "the archive is not a Berth export nor a Synapse archive (a tar holding synapse.dump and the signing key)",
  "the archive's database is at schema {number}; this Synapse upgrades from {number} to {number}",
  "the archive's database is from a newer Synapse (schema {number}) than ours ({number})",
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

/** A refusal's sentence with its blanks filled in order. */
export function importRefusal(template: ImportRefusal, ...values: (string | number)[]): string {
  let index = 0;
  return template.replace(/\{[a-z]+\}/g, () => String(values[index++]));
}

/** The host's reason when it is one of the refusals, else null. */
export function importRefusalText(message: string): string | null {
  const sentence = message.trim();
  return PATTERNS.some((pattern) => pattern.test(sentence)) ? sentence : null;
}
