// The homeserver operations of one host behind one object, which the
// homeserver.* handlers call: each method runs its operation (one file each
// beside this one) on the shared core (core.ts: the per-server lock, records,
// containers, waits, proxy).
import type { Readable } from "node:stream";
import type { HostCheckOutcome } from "../../protocol/checks.ts";
import type { DeliveredJobPayload, JobPayload, JobResult } from "../../protocol/jobs.ts";
import type { UploadResult } from "../backup/transfer.ts";
import { checkIsolation, withHostListener } from "../checks/isolation.ts";
import type { Logger } from "../log.ts";
import { setAdminPassword } from "./admin-password.ts";
import type { PlanResources } from "./containers.ts";
import { HomeserverCore, type HomeserverManagerOptions, type OperationContext, type RunningResult } from "./core.ts";
import { destroy } from "./destroy.ts";
import { configuredRoomEncryption, probeRoomEncryption } from "./encryption-probe.ts";
import { importHomeserver } from "./import.ts";
import { restoreHostState, resume, start, stop, suspend } from "./lifecycle.ts";
import { provision, type ProvisionResult, type ProvisionSpec } from "./provision.ts";
import type { HomeserverRecords } from "./records.ts";
import { createRegistrationToken, listRegistrationTokens, revokeRegistrationToken } from "./registration-tokens.ts";
import { resize } from "./resize.ts";
import { verifyRestore } from "./restore-verify.ts";
import { runningSynapse } from "./running-synapse.ts";
import { blockRoom, listRooms, purgeRoom } from "./rooms.ts";
import { applySettings } from "./settings.ts";
import { fullExport } from "./full-export.ts";
import { legalExport } from "./legal-export.ts";
import { backup, restore } from "./snapshot.ts";
import { upgrade } from "./upgrade.ts";
import { DEFAULT_UPKEEP_IMAGE, upkeep } from "./upkeep.ts";
import { createUser, listUsers, setUserPassword, updateUser } from "./users.ts";

export type { HomeserverManagerOptions } from "./core.ts";

export class HomeserverManager {
  private readonly core: HomeserverCore;
  private readonly upkeepImage: string;
  readonly records: HomeserverRecords;

  constructor(options: HomeserverManagerOptions) {
    this.core = new HomeserverCore(options);
    this.upkeepImage = options.upkeepImage ?? DEFAULT_UPKEEP_IMAGE;
    this.records = this.core.records;
  }

  provision(spec: ProvisionSpec, ctx: OperationContext): Promise<ProvisionResult> {
    return provision(this.core, spec, ctx);
  }

  /** A new homeserver from its owner's archive; whatever fails, nothing of it is left (import.ts). */
  importHomeserver(
    job: DeliveredJobPayload<"homeserver.import">,
    download: () => Promise<Readable>,
    ctx: OperationContext,
  ): Promise<JobResult<"homeserver.import">> {
    return importHomeserver(this.core, job, download, ctx);
  }

  stop(serverId: string, ctx: OperationContext): Promise<{ serverId: string; state: "stopped" }> {
    return stop(this.core, serverId, ctx);
  }

  start(serverId: string, ctx: OperationContext): Promise<RunningResult> {
    return start(this.core, serverId, ctx);
  }

  suspend(serverId: string, ctx: OperationContext): Promise<{ serverId: string; state: "suspended" }> {
    return suspend(this.core, serverId, ctx);
  }

  resume(serverId: string, ctx: OperationContext): Promise<RunningResult> {
    return resume(this.core, serverId, ctx);
  }

  resize(
    serverId: string,
    resources: PlanResources,
    maxUsers: number | undefined,
    ctx: OperationContext,
  ): Promise<{ serverId: string; resources: PlanResources }> {
    return resize(this.core, serverId, resources, maxUsers, ctx);
  }

  applySettings(payload: JobPayload<"homeserver.settings.apply">, ctx: OperationContext): Promise<JobResult<"homeserver.settings.apply">> {
    return applySettings(this.core, payload.serverId, payload.settings, ctx);
  }

  upgrade(serverId: string, image: string, ctx: OperationContext): Promise<RunningResult & { previousImage: string }> {
    return upgrade(this.core, serverId, image, ctx);
  }

  setAdminPassword(
    serverId: string,
    adminUserId: string,
    passwordHash: string,
    ctx: OperationContext,
  ): Promise<{ serverId: string; adminUserId: string; sessionsEnded: number }> {
    return setAdminPassword(this.core, serverId, adminUserId, passwordHash, ctx);
  }

  listUsers(query: JobPayload<"homeserver.users.list">, ctx: OperationContext): Promise<JobResult<"homeserver.users.list">> {
    return listUsers(this.core, query, ctx);
  }

  createUser(payload: JobPayload<"homeserver.users.create">, ctx: OperationContext): Promise<JobResult<"homeserver.users.create">> {
    return createUser(this.core, payload, ctx);
  }

  setUserPassword(payload: JobPayload<"homeserver.users.set_password">, ctx: OperationContext): Promise<JobResult<"homeserver.users.set_password">> {
    return setUserPassword(this.core, payload, ctx);
  }

  updateUser(payload: JobPayload<"homeserver.users.update">, ctx: OperationContext): Promise<JobResult<"homeserver.users.update">> {
    return updateUser(this.core, payload, ctx);
  }

  listRegistrationTokens(
    payload: JobPayload<"homeserver.registration_tokens.list">,
    ctx: OperationContext,
  ): Promise<JobResult<"homeserver.registration_tokens.list">> {
    return listRegistrationTokens(this.core, payload, ctx);
  }

  createRegistrationToken(
    payload: JobPayload<"homeserver.registration_tokens.create">,
    ctx: OperationContext,
  ): Promise<JobResult<"homeserver.registration_tokens.create">> {
    return createRegistrationToken(this.core, payload, ctx);
  }

  revokeRegistrationToken(
    payload: JobPayload<"homeserver.registration_tokens.revoke">,
    ctx: OperationContext,
  ): Promise<JobResult<"homeserver.registration_tokens.revoke">> {
    return revokeRegistrationToken(this.core, payload, ctx);
  }

  listRooms(query: JobPayload<"homeserver.rooms.list">, ctx: OperationContext): Promise<JobResult<"homeserver.rooms.list">> {
    return listRooms(this.core, query, ctx);
  }

  blockRoom(payload: JobPayload<"homeserver.rooms.block">, ctx: OperationContext): Promise<JobResult<"homeserver.rooms.block">> {
    return blockRoom(this.core, payload, ctx);
  }

  purgeRoom(payload: JobPayload<"homeserver.rooms.purge">, ctx: OperationContext): Promise<JobResult<"homeserver.rooms.purge">> {
    return purgeRoom(this.core, payload, ctx);
  }

  backup(
    serverId: string,
    job: { backupId: string; recipient: string },
    upload: (ciphertext: Readable) => Promise<UploadResult>,
    ctx: OperationContext,
  ): Promise<UploadResult & { serverId: string; backupId: string }> {
    return backup(this.core, serverId, job, upload, ctx);
  }

  legalExport(
    serverId: string,
    job: JobPayload<"homeserver.legal_export">,
    upload: (ciphertext: Readable) => Promise<UploadResult>,
    ctx: OperationContext,
  ): Promise<JobResult<"homeserver.legal_export">> {
    return legalExport(this.core, serverId, job, upload, ctx);
  }

  fullExport(
    serverId: string,
    job: { exportId: string; passphrase: string },
    upload: (ciphertext: Readable) => Promise<UploadResult>,
    ctx: OperationContext,
  ): Promise<JobResult<"homeserver.full_export">> {
    return fullExport(this.core, serverId, job, upload, ctx);
  }

  restore(
    serverId: string,
    job: { backupId: string; identity: string },
    download: () => Promise<Readable>,
    ctx: OperationContext,
  ): Promise<RunningResult & { backupId: string; restoredFrom: string }> {
    return restore(this.core, serverId, job, download, ctx);
  }

  /** The backup restored into a throwaway sandbox, Synapse started on it and its contents counted; the live server untouched. */
  verifyRestore(
    serverId: string,
    job: { backupId: string; identity: string },
    download: () => Promise<Readable>,
    ctx: OperationContext,
  ): Promise<JobResult<"homeserver.restore_verify">> {
    return verifyRestore(this.core, serverId, job, download, ctx);
  }

  upkeep(payload: JobPayload<"homeserver.upkeep">, ctx: OperationContext): Promise<JobResult<"homeserver.upkeep">> {
    return upkeep(this.core, payload, this.upkeepImage, ctx);
  }

  destroy(serverId: string, ctx: OperationContext): Promise<{ serverId: string; state: "deleted" }> {
    return destroy(this.core, serverId, ctx);
  }

  /** The encryption_enabled_by_default_for_room_type of the server's homeserver.yaml, if set. */
  configuredRoomEncryption(serverId: string, dataRoot: string): string | undefined {
    return configuredRoomEncryption(this.core, serverId, dataRoot);
  }

  /** The algorithm a new private room gets without asking, as a throwaway user finds it; nothing when none. */
  probeRoomEncryption(serverId: string, ctx: OperationContext): Promise<string | undefined> {
    return probeRoomEncryption(this.core, serverId, ctx);
  }

  /**
   * The isolation check of this server, against every other homeserver of this host, the host's
   * `privatePorts`, and a listener the check opens on the gateway of the server's network.
   */
  async checkIsolation(serverId: string, privatePorts: Array<{ what: string; port: number }>, signal: AbortSignal): Promise<HostCheckOutcome> {
    const record = this.core.requireRecord(serverId);
    const names = this.core.names(serverId);
    const check = (hostPorts: Array<{ what: string; port: number }>) =>
      checkIsolation({
        runtime: this.core.runtime,
        names,
        // already on the host, and it has the Python the probe runs on
        probeImage: record.images.synapse,
        neighbours: this.records
          .ids()
          .filter((id) => id !== serverId)
          .map((id) => this.core.names(id)),
        hostPorts,
        labels: this.core.labels,
        signal,
      });
    const gateway = (await this.core.runtime.inspectNetwork(names.hsNetwork))?.gateways[0];
    if (!gateway) return check(privatePorts);
    return withHostListener(gateway, (port) => check([...privatePorts, { what: "a listener of the host's, opened for the check", port }]));
  }

  runningSynapse(serverId: string, signal: AbortSignal): Promise<{ version: string; image: string } | undefined> {
    return runningSynapse(this.core, serverId, signal);
  }

  /** After an agent or host restart: every server's storage quota, firewall rules, containers that should run and proxy route put back. */
  restoreHostState(dataRoot: string, log: Logger = this.core.log): Promise<void> {
    return restoreHostState(this.core, dataRoot, log);
  }

  listRecordIds(): string[] {
    return this.records.ids();
  }
}
