import { describe, expect, it } from "vitest";
import { importRefusalText } from "../../../protocol/import-refusals.ts";
import { ImportRefused } from "../../../agent/backup/import-archive.ts";
import { checkImportableSchema } from "../../../agent/homeserver/synapse-schema.ts";

// Which databases an import takes: from the oldest schema our Synapse upgrades from to the one it
// runs. Each refusal is one of the sentences the Worker shows its owner. (import.test.ts restores a
// database edited to be newer, end to end.)

const schema = { current: 94, compat: 84 };

describe("an imported database's schema version", () => {
  it.each([84, 88, 94])("is taken from the compat version up to the current one: %i", (found) => {
    expect(checkImportableSchema(found, schema)).toBe(found);
  });

  it.each([
    [
      95,
      "the archive's database is at Synapse schema version 95, newer than this host's Synapse understands (94): it can be imported once Berth runs a Synapse that new",
    ],
    [
      83,
      "the archive's database is at Synapse schema version 83, older than the oldest this host's Synapse upgrades from (84; it runs 94): upgrade your Synapse to a release at schema version 84 or newer, then make the archive again",
    ],
    [undefined, "the archive's database is not a Synapse database (it has no schema_version table)"],
  ])("is refused, in words its owner is shown, when it is %s", (found, reason) => {
    const refusal = (() => {
      try {
        checkImportableSchema(found, schema);
      } catch (error) {
        return error;
      }
    })();
    expect(refusal).toBeInstanceOf(ImportRefused);
    expect((refusal as Error).message).toBe(reason);
    expect(importRefusalText(reason)).toBe(reason);
  });
});
