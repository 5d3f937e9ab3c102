// The homeserver.users.*, homeserver.registration_tokens.*, homeserver.rooms.* and
// homeserver.settings.* kinds: what a customer does to their homeserver's people, rooms
// and settings from the dashboard, run by the HomeserverManager — people and rooms against Synapse's admin API as the
// host's service account (agent/homeserver/service-account.ts), settings as a new
// configuration and a restart. The Worker holds no credential of the homeserver: it
// sends these jobs and gets their results.
import type { AdministrationJobKind } from "../../protocol/jobs.ts";
import type { HomeserverManager } from "../homeserver/manager.ts";
import type { JobHandler, JobHandlers } from "./types.ts";

/** `customerData` throws unless customer data may be touched here (the data root's encryption); every kind checks it first. */
export function administrationHandlers(manager: HomeserverManager, customerData: () => void): JobHandlers<AdministrationJobKind> {
  const checked =
    <K extends AdministrationJobKind>(fn: JobHandler<K>): JobHandler<K> =>
    async (payload, ctx) => {
      customerData();
      return fn(payload, ctx);
    };
  return {
    "homeserver.users.list": checked((query, ctx) => manager.listUsers(query, ctx)),
    "homeserver.users.create": checked((payload, ctx) => manager.createUser(payload, ctx)),
    "homeserver.users.set_password": checked((payload, ctx) => manager.setUserPassword(payload, ctx)),
    "homeserver.users.update": checked((payload, ctx) => manager.updateUser(payload, ctx)),
    "homeserver.registration_tokens.list": checked((payload, ctx) => manager.listRegistrationTokens(payload, ctx)),
    "homeserver.registration_tokens.create": checked((payload, ctx) => manager.createRegistrationToken(payload, ctx)),
    "homeserver.registration_tokens.revoke": checked((payload, ctx) => manager.revokeRegistrationToken(payload, ctx)),
    "homeserver.rooms.list": checked((query, ctx) => manager.listRooms(query, ctx)),
    "homeserver.rooms.block": checked((payload, ctx) => manager.blockRoom(payload, ctx)),
    "homeserver.rooms.purge": checked((payload, ctx) => manager.purgeRoom(payload, ctx)),
    "homeserver.settings.apply": checked((payload, ctx) => manager.applySettings(payload, ctx)),
  };
}
