// The Synapse module that enforces the plan's bound on users inside Synapse
// (docs/decisions.md), as Python source: the agent writes it beside each
// server's data and mounts it read-only into the Synapse container, so it works
// with any Synapse image (the official one in production, berth/synapse here).
import { chmodSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../atomic-file.ts";
import type { HomeserverPaths } from "./names.ts";
import { STORAGE_RESERVE_MODULE_FILE, STORAGE_RESERVE_MODULE_SOURCE } from "./storage-reserve-module.ts";

/** Its directory in the Synapse container, on the container's PYTHONPATH. */
export const SYNAPSE_MODULES_DIR = "/usr/local/lib/berth-synapse-modules";
export const USER_LIMIT_MODULE_FILE = "berth_user_limit.py";
/** Beside the modules: the localpart of the encryption check's probe user while it is made (encryption-probe.ts). */
export const PROBE_LOCALPART_FILE = "probe-localpart";

export const USER_LIMIT_MODULE_SOURCE = `"""Berth's bound on a homeserver's users, inside Synapse.

Synapse calls check_registration_for_spam for every account it creates:
registration with a token, its admin API (PUT /_synapse/admin/v2/users/<id>)
and shared-secret registration. This refuses one when the users who can use the
server (not deactivated, not guests, not of the hidden type "support": the
count the agent makes) have reached the plan's limit, which the agent writes to
limit_file with every job carrying it. The file is read at each registration,
so a new limit applies without a restart. No file: no limit known yet, allowed.
The encryption check's throwaway user (hidden, uncounted, deactivated within
seconds) is exempt: while the agent makes it, its random localpart is in
probe_file, which only the host can write (a read-only mount).
The agent mounts this module read-only into the Synapse container, on its
PYTHONPATH, and lists it in homeserver.yaml (agent/homeserver/config.ts).
"""

import logging

from synapse.module_api import ModuleApi
from synapse.module_api.errors import Codes, ConfigError, SynapseError
from synapse.spam_checker_api import RegistrationBehaviour

logger = logging.getLogger(__name__)

HIDDEN_USER_TYPE = "support"


def count_usable_users(txn):
    txn.execute(
        "SELECT COUNT(*) FROM users WHERE deactivated = 0 AND is_guest = 0"
        " AND (user_type IS NULL OR user_type <> ?)",
        (HIDDEN_USER_TYPE,),
    )
    return txn.fetchone()[0]


class UserLimit:
    def __init__(self, config, api: ModuleApi):
        self.limit_file = config["limit_file"]
        self.exempt = frozenset(config.get("exempt_localparts", []))
        self.probe_file = config.get("probe_file")
        self.api = api
        api.register_spam_checker_callbacks(check_registration_for_spam=self.check_registration_for_spam)

    @staticmethod
    def parse_config(config):
        if not isinstance(config, dict) or not isinstance(config.get("limit_file"), str):
            raise ConfigError("berth_user_limit needs limit_file (a path)")
        exempt = config.get("exempt_localparts", [])
        if not isinstance(exempt, list) or not all(isinstance(x, str) for x in exempt):
            raise ConfigError("berth_user_limit: exempt_localparts must be a list of localparts")
        return config

    def read_limit(self):
        try:
            with open(self.limit_file, encoding="utf-8") as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        # Anything but a positive integer refuses every registration rather than none.
        return int(text) if text.isdigit() and int(text) > 0 else 0

    def probing(self, username):
        if not self.probe_file:
            return False
        try:
            with open(self.probe_file, encoding="utf-8") as f:
                return f.read().strip() == username
        except FileNotFoundError:
            return False

    async def check_registration_for_spam(self, email_threepid, username, request_info, auth_provider_id=None):
        if username is not None and (username in self.exempt or self.probing(username)):
            return RegistrationBehaviour.ALLOW
        # Not a new account: Synapse then answers that it is taken (provisioning registers the
        # first admin again every time, at the limit too).
        if username is not None and await self.api.check_user_exists(self.api.get_qualified_user_id(username)):
            return RegistrationBehaviour.ALLOW
        limit = self.read_limit()
        if limit is None:
            return RegistrationBehaviour.ALLOW
        users = await self.api.run_db_interaction("berth_count_usable_users", count_usable_users)
        if users >= limit:
            logger.info("refused registration of %r: %d users, plan's limit %d", username, users, limit)
            # Synapse answers a module's SynapseError as it is (DENY would be a vague 429).
            raise SynapseError(403, f"This homeserver has reached its plan's limit of {limit} users", Codes.FORBIDDEN)
        return RegistrationBehaviour.ALLOW
`;

/**
 * Berth's modules (this one and storage-reserve-module.ts) in the server's root-owned directory (of
 * which only this directory is mounted, read-only): nothing Synapse runs as can change them.
 * Returns whether any changed.
 */
export function writeSynapseModules(paths: HomeserverPaths): boolean {
  mkdirSync(paths.synapseModules, { recursive: true });
  chmodSync(paths.synapseModules, 0o755); // whatever the umask: Synapse's uid reads it
  let changed = false;
  for (const [name, source] of [
    [USER_LIMIT_MODULE_FILE, USER_LIMIT_MODULE_SOURCE],
    [STORAGE_RESERVE_MODULE_FILE, STORAGE_RESERVE_MODULE_SOURCE],
  ] as const) {
    const file = join(paths.synapseModules, name);
    let current: string | undefined;
    try {
      current = readFileSync(file, "utf8");
    } catch {
      current = undefined;
    }
    if (current === source) continue;
    writeFileAtomic(file, source, 0o644, 0);
    changed = true;
  }
  return changed;
}
