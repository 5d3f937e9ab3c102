// The encryption-by-default check: the configuration Synapse runs with encrypts private rooms by
// default, and a probe finds it doing so. A configuration without the setting fails at once,
// naming it (the probe would only show its consequence).
import type { HostCheckOutcome } from "../../protocol/checks.ts";
import { ROOM_ENCRYPTION_SETTING } from "../homeserver/encryption-probe.ts";

/** The values under which a private room (an invite-only one) is encrypted by default. */
const ENCRYPTING_VALUES = new Set(["invite", "all"]);

export interface EncryptionByDefaultInputs {
  /** The setting's value in the running configuration; nothing when unset. */
  configured: () => string | undefined;
  /** A private room created without asking for encryption: its m.room.encryption algorithm, nothing when unset. */
  probe: () => Promise<string | undefined>;
}

export async function checkEncryptionByDefault(inputs: EncryptionByDefaultInputs): Promise<HostCheckOutcome> {
  const configured = inputs.configured();
  const setting = { label: ROOM_ENCRYPTION_SETTING, value: configured ?? "(not set)" };
  if (configured === undefined || !ENCRYPTING_VALUES.has(configured)) {
    return {
      checkId: "encryption-by-default",
      result: "fails",
      evidence: {
        summary: `The homeserver's configuration does not encrypt private rooms by default: ${ROOM_ENCRYPTION_SETTING} is ${configured === undefined ? "missing" : `"${configured}"`}.`,
        facts: [setting],
      },
    };
  }
  const algorithm = await inputs.probe();
  const found = { label: "Encryption of a new private room", value: algorithm ?? "none" };
  if (algorithm === undefined) {
    return {
      checkId: "encryption-by-default",
      result: "fails",
      evidence: { summary: "A private room created without asking for encryption was not encrypted.", facts: [setting, found] },
    };
  }
  return {
    checkId: "encryption-by-default",
    result: "holds",
    evidence: { summary: `A private room created without asking for encryption was encrypted (${algorithm}).`, facts: [setting, found] },
  };
}
