// The homeserver jobs' payloads: the ids in them become paths on the host (the server's data
// directory, a restore's staging directory, state files) and PostgreSQL database names, so an id
// that could leave its directory or end a quoted name is refused before anything is done.
import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { DEFAULT_HOMESERVER_SETTINGS } from "../../../protocol/homeserver-settings.ts";
import { resourceIdSchema } from "../../../protocol/messages.ts";
import { generateAgeKeyPair } from "../../../agent/backup/age.ts";
import { JobInputError, type Json } from "../../../agent/handlers/types.ts";
import { homeserverPaths, importStaging, restoreStaging } from "../../../agent/homeserver/names.ts";
import { runCleanups, jobContext } from "../helpers.ts";
import { homeserverKindWithoutDocker } from "./without-docker.ts";

afterEach(runCleanups);

const BAD_IDS = ["../x", "a/b", ".", "..", "a\0b", "a'b", 'a"b', "a;b", "-a", "Upper", "", "a".repeat(65)];

const handler = homeserverKindWithoutDocker;

describe("homeserver job payloads", () => {
  const keys = generateAgeKeyPair();
  const serverId = randomUUID();
  const payloads: Record<string, Record<string, unknown>> = {
    "homeserver.provision": {
      serverId,
      serverName: "chat.example.org",
      publicBaseUrl: "https://chat.example.org/",
      resources: { memoryMiB: 1024, cpus: 1, storageGiB: 10 },
      images: { synapse: "berth/synapse:latest", postgres: "berth/postgres:15" },
    },
    "homeserver.stop": { serverId },
    "homeserver.start": { serverId },
    "homeserver.suspend": { serverId },
    "homeserver.resume": { serverId },
    "homeserver.delete": { serverId },
    "homeserver.upgrade": { serverId, image: "berth/synapse:latest" },
    "homeserver.set_admin_password": { serverId, adminUserId: "@admin:chat.example.org", passwordHash: `$2b$12$${"a".repeat(53)}` },
    "homeserver.backup": {
      serverId,
      backupId: randomUUID(),
      recipient: keys.recipient,
      partSize: 8 * 1024 * 1024,
      uploadBase: "https://berth.example/api/agent/backups/b",
    },
    "homeserver.restore": { serverId, backupId: randomUUID(), identity: keys.identity, downloadUrl: "https://berth.example/api/agent/backups/b/object" },
    "homeserver.users.list": { serverId, from: 0, limit: 10 },
    "homeserver.users.create": { serverId, localpart: "alice", maxUsers: 25 },
    "homeserver.users.set_password": { serverId, userId: "@alice:chat.example.org", passwordHash: `$2b$12$${"a".repeat(53)}` },
    "homeserver.users.update": { serverId, userId: "@alice:chat.example.org", action: "log_out" },
    "homeserver.registration_tokens.list": { serverId },
    "homeserver.registration_tokens.create": { serverId, usesAllowed: 1, maxUsers: 25 },
    "homeserver.registration_tokens.revoke": { serverId, token: "abcdefghijklmnop" },
    "homeserver.settings.apply": { serverId, settings: DEFAULT_HOMESERVER_SETTINGS },
    "homeserver.checks": { serverId, checks: ["encryption-by-default", "disk-encryption"] },
  };

  it.each(Object.keys(payloads))("%s refuses a server id that could leave its directory or break a quoted name", async (kind) => {
    const run = handler(kind);
    for (const bad of BAD_IDS) {
      const refusal = run({ ...payloads[kind], serverId: bad } as Json, jobContext(kind));
      await expect(refusal, JSON.stringify(bad)).rejects.toBeInstanceOf(JobInputError);
      await expect(refusal, JSON.stringify(bad)).rejects.toThrow(new RegExp(`^${kind}: invalid payload: serverId: `));
    }
  });

  it.each(["homeserver.backup", "homeserver.restore"])("%s refuses such a backup id", async (kind) => {
    const run = handler(kind);
    for (const bad of BAD_IDS) {
      const refusal = run({ ...payloads[kind], backupId: bad } as Json, jobContext(kind));
      await expect(refusal, JSON.stringify(bad)).rejects.toThrow(new RegExp(`^${kind}: invalid payload: backupId: `));
    }
  });

  it("homeserver.import refuses such an import id: it names the staging directory whose presence lets the job remove a half-made homeserver", async () => {
    const kind = "homeserver.import";
    const run = handler(kind);
    const payload = { spec: payloads["homeserver.provision"], downloadUrl: "https://berth.example/api/agent/imports/i/object" };
    for (const bad of BAD_IDS) {
      const refusal = run({ ...payload, importId: bad } as Json, jobContext(kind));
      await expect(refusal, JSON.stringify(bad)).rejects.toBeInstanceOf(JobInputError);
      await expect(refusal, JSON.stringify(bad)).rejects.toThrow(new RegExp(`^${kind}: invalid payload: importId: `));
    }
  });

  it("homeserver.settings.apply and homeserver.provision refuse settings that are not ours: open registration, a wildcard or a URL for a server, a missing field", async () => {
    for (const settings of [
      { ...DEFAULT_HOMESERVER_SETTINGS, registration: "open" },
      { ...DEFAULT_HOMESERVER_SETTINGS, federation: { mode: "allow_list", servers: ["*.example.org"] } },
      { ...DEFAULT_HOMESERVER_SETTINGS, federation: { mode: "allow_list", servers: ["https://example.org/"] } },
      { ...DEFAULT_HOMESERVER_SETTINGS, federation: { mode: "allow_list", servers: ["example.org\nenable_registration: true"] } },
      { ...DEFAULT_HOMESERVER_SETTINGS, maxUploadMiB: 0 },
      { ...DEFAULT_HOMESERVER_SETTINGS, enable_registration_without_verification: true },
      { registration: "token" },
    ]) {
      for (const kind of ["homeserver.settings.apply", "homeserver.provision"]) {
        const refusal = handler(kind)({ ...payloads[kind], settings } as Json, jobContext(kind));
        await expect(refusal, JSON.stringify(settings)).rejects.toThrow(new RegExp(`^${kind}: invalid payload: settings`));
      }
    }
  });

  it("ids are the control plane's UUIDs and the tests' prefixed ids, and only such ids become paths", () => {
    for (const good of [randomUUID(), "t1a2b3c4d-alpha", "t1a2b3c4d-b1", "a", "a".repeat(64)]) {
      expect(resourceIdSchema.safeParse(good).success, good).toBe(true);
      expect(homeserverPaths("/srv/berth", good).root).toBe(`/srv/berth/homeservers/${good}`);
      expect(importStaging(homeserverPaths("/srv/berth", good), "imp-1")).toBe(`/srv/berth/imports/${good}/imp-1`);
      expect(importStaging(homeserverPaths("/srv/berth", "srv-1"), good)).toBe(`/srv/berth/imports/srv-1/${good}`);
    }
    for (const bad of BAD_IDS) {
      expect(resourceIdSchema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
      expect(() => homeserverPaths("/srv/berth", bad), JSON.stringify(bad)).toThrow(/is not a server id/);
      expect(() => restoreStaging(homeserverPaths("/srv/berth", "srv-1"), bad), JSON.stringify(bad)).toThrow(/is not a backup id/);
      expect(() => importStaging(homeserverPaths("/srv/berth", "srv-1"), bad), JSON.stringify(bad)).toThrow(
        / is not an import id: refusing to make a path of it$/,
      );
      expect(() => importStaging(homeserverPaths("/srv/berth", bad), "imp-1"), JSON.stringify(bad)).toThrow(
        / is not a server id: refusing to make a path of it$/,
      );
    }
  });
});
