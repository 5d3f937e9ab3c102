// What a homeserver's owner may change about how its Synapse runs: registration,
// federation, retention and the upload size. Shared by the Worker (which keeps
// the settings a server runs with and validates a customer's change) and the
// agent (which renders them into homeserver.yaml). The defaults are what every
// homeserver ran with before settings existed.
import { z } from "zod";

/** Synapse's max_upload_size before settings existed (and the proxy's default body limit). */
export const DEFAULT_MAX_UPLOAD_MIB = 50;
/** No plan lets uploads be larger: Synapse spools an upload to its /tmp, which counts against its memory. */
export const MAX_UPLOAD_MIB = 1024;
/** Retention periods: a day (Synapse purges once a day, so less means nothing) to ten years. */
export const MIN_RETENTION_DAYS = 1;
export const MAX_RETENTION_DAYS = 3650;
/** An allow-list longer than this is no allow-list. */
export const MAX_FEDERATION_SERVERS = 100;

/**
 * A Matrix server name as another server is named in federation: a DNS name (at least two
 * labels, lower case, no wildcard, no trailing dot) with an optional port. No IP literals: a
 * homeserver we would federate with by address is no homeserver a customer names.
 */
export const federationServerName = z
  .string()
  .trim()
  .toLowerCase()
  .max(259)
  .regex(
    /^(?=[^:]{1,253}(:|$))([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?(:([1-9][0-9]{0,4}))?$/,
    "a server name: a DNS name such as example.org, with an optional :port",
  )
  .refine((name) => {
    const port = name.split(":")[1];
    return port === undefined || Number(port) <= 65535;
  }, "a port from 1 to 65535");

const retentionDays = z.number().int().min(MIN_RETENTION_DAYS).max(MAX_RETENTION_DAYS).nullable();

export const federationSetting = z.discriminatedUnion("mode", [
  z.strictObject({ mode: z.literal("on") }),
  z.strictObject({ mode: z.literal("off") }),
  z.strictObject({
    mode: z.literal("allow_list"),
    servers: z
      .array(federationServerName)
      .min(1, "at least one server name (or federation off)")
      .max(MAX_FEDERATION_SERVERS)
      .refine((servers) => new Set(servers).size === servers.length, "each server name once"),
  }),
]);

export const homeserverSettingsSchema = z.strictObject({
  /** "token": anyone with a registration token the owner made registers (MSC3231); never open registration. */
  registration: z.enum(["closed", "token"]),
  federation: federationSetting,
  /** Messages older than this many days are purged; null: kept. */
  messageRetentionDays: retentionDays,
  /** Media (local and cached remote) not accessed for this many days is deleted; null: kept. */
  mediaRetentionDays: retentionDays,
  maxUploadMiB: z.number().int().min(1).max(MAX_UPLOAD_MIB),
});
export type HomeserverSettings = z.output<typeof homeserverSettingsSchema>;

/** What a settings job that failed says once the previous settings run again (the Worker tells its customer so). */
export const SETTINGS_ROLLED_BACK = "rolled back to the previous settings, which are running again (data intact)";

export const DEFAULT_HOMESERVER_SETTINGS: HomeserverSettings = {
  registration: "closed",
  federation: { mode: "on" },
  messageRetentionDays: null,
  mediaRetentionDays: null,
  maxUploadMiB: DEFAULT_MAX_UPLOAD_MIB,
};
