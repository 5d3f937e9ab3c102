import type { WorkContext } from "../context";
import type { CheckResultRow } from "../db/schema";

/** Told of every check result as it is recorded: operators' alerts of failing checks are added here. */
export async function noteCheckFailures(_ctx: WorkContext, _rows: CheckResultRow[]): Promise<void> {}
