import type { Authenticated } from "../auth/sessions";
import type { Database } from "../db/client";
import type { Env } from "../env";

// What every handler can read from `c.var`.
export interface AppEnv {
  Bindings: Env;
  Variables: {
    db: Database;
    /** The request's clock: one instant for all of its work. */
    now: Date;
    auth: Authenticated | null;
  };
}
