// Backups under faults, with the real parts: `wrangler dev` (real D1 and local
// R2), the real berth-agent as its own process (so it can be killed without
// the Worker, and the Worker restarted without the agent), Docker, and a
// homeserver holding ~190 MiB of media so an upload takes several parts.
// Killed or cut off mid-upload, no backup may end up marked successful unless
// it restores, and the backups before it stay intact.
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { registerWithSharedSecret, requestJson } from "../../agent/homeserver/synapse-api.ts";
import { destroyAgentHomeservers } from "../../scripts/dev-reset.mjs";
import { reservePort } from "../ports.ts";
import { AgentProcess, Api, DevServer, Fatal, agentEnroll, signUpOperator, runCleanups, tempRoot, waitFor } from "./agent-helpers";
import { createHomeserver, payingCustomer, run, untilRunning, type BackupView, type ServerView } from "./homeserver-helpers";

const MiB = 1024 * 1024;
const MEDIA_FILES = 4;
const MEDIA_FILE_BYTES = 48 * MiB;

let root: string;
let dev: DevServer;
let operator: Api;
let customer: Api;
let hostConfigDir: string;
let dataRoot: string;
const agents: AgentProcess[] = [];
let server: ServerView;
let userPassword: string;
const backups: Record<string, BackupView> = {};

const agent = () => agents.at(-1)!;
const serverDir = () => join(dataRoot, "homeservers", server.id);

async function startAgent(): Promise<AgentProcess> {
  const process = new AgentProcess(`host#${agents.length + 1}`, hostConfigDir);
  agents.push(process);
  await process.waitLog("connected to the control plane");
  return process;
}

/** Synapse on its bridge address (this agent runs without Caddy). */
async function synapseBase(): Promise<string> {
  const shortId = server.id.replaceAll("-", "").slice(0, 12);
  const inspect = await run("docker", ["inspect", "-f", `{{(index .NetworkSettings.Networks "berth-${shortId}-hs").IPAddress}}`, `berth-${shortId}-synapse`]);
  const ip = inspect.stdout.toString("utf8").trim();
  if (inspect.code !== 0 || !ip) throw new Error(`no address for the server's Synapse: ${inspect.stderr.toString("utf8")}`);
  return `http://${ip}:8008`;
}

async function listBackups(): Promise<BackupView[]> {
  return (await customer.expect<{ backups: BackupView[] }>(200, "GET", `/api/servers/${server.id}/backups`)).backups;
}

async function backupNamed(id: string): Promise<BackupView> {
  const backup = (await listBackups()).find((b) => b.id === id);
  if (!backup) throw new Error(`backup ${id} is not listed`);
  return backup;
}

async function untilFinished(id: string, timeoutMs = 240_000): Promise<BackupView> {
  return waitFor(
    `backup ${id} to finish`,
    async () => {
      const backup = await backupNamed(id);
      return backup.status === "succeeded" || backup.status === "failed" ? backup : undefined;
    },
    { timeoutMs, intervalMs: 500 },
  );
}

/** Asks for a backup and returns once the Worker holds at least one part of it (and not all). */
async function backupUnderWay(): Promise<string> {
  const { id } = await customer.expect<{ id: string }>(202, "POST", `/api/servers/${server.id}/backups`);
  await waitFor(
    `backup ${id} to have a part uploaded`,
    async () => {
      const backup = await backupNamed(id);
      if (backup.status === "succeeded" || backup.status === "failed") throw new Fatal(`backup ${id} was ${backup.status} before a fault could be injected`);
      return backup.progressBytes >= 8 * MiB;
    },
    { timeoutMs: 120_000, intervalMs: 50 },
  );
  return id;
}

async function login(): Promise<number> {
  const answer = await requestJson(`${await synapseBase()}/_matrix/client/v3/login`, {
    method: "POST",
    body: { type: "m.login.password", identifier: { type: "m.id.user", user: "carol" }, password: userPassword },
  });
  return answer.status;
}

describe("backups under faults (wrangler dev, the real agent, Docker)", () => {
  beforeAll(async () => {
    root = tempRoot("berth-e2e-backup-faults-");
    dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"));
    await dev.start();

    operator = new Api(dev.baseUrl);
    await signUpOperator(operator, dev);
    const { token } = await operator.expect<{ token: string }>(201, "POST", "/api/admin/join-tokens", { region: "us-east" });
    hostConfigDir = join(root, "host", "config");
    dataRoot = join(root, "host", "data");
    const enrolled = await agentEnroll({ url: dev.baseUrl, token, configDir: hostConfigDir, dataRoot, name: `faults-${randomUUID().slice(0, 8)}` });
    if (enrolled.code !== 0) throw new Error(`enroll failed: ${enrolled.stderr}`);
    // Reconnect fast after the Worker restarts.
    const file = join(hostConfigDir, "agent.json");
    writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, "utf8")), reconnectBaseMs: 200, reconnectMaxMs: 2_000 }, null, 2));
    await startAgent();

    customer = new Api(dev.baseUrl);
    await payingCustomer(customer, dev.baseUrl, `faults-${randomUUID()}@example.com`, `customer pass ${randomUUID()}`);
    server = await untilRunning(customer, (await createHomeserver(customer, `faults-${randomBytes(3).toString("hex")}`)).id);

    const secret = readFileSync(join(serverDir(), "secrets", "registration-shared-secret"), "utf8").trim();
    userPassword = `carol-${randomBytes(12).toString("hex")}`;
    const carol = await registerWithSharedSecret(await synapseBase(), secret, {
      localpart: "carol",
      password: userPassword,
      admin: false,
      serverName: server.serverName,
    });
    if (!carol.created) throw new Error("carol existed already");
    for (let i = 0; i < MEDIA_FILES; i++) {
      const upload = await fetch(`${await synapseBase()}/_matrix/media/v3/upload?filename=f${i}.bin`, {
        method: "POST",
        headers: { authorization: `Bearer ${carol.accessToken}`, "content-type": "application/octet-stream" },
        body: randomBytes(MEDIA_FILE_BYTES),
      });
      if (upload.status !== 200) throw new Error(`media upload answered ${upload.status}: ${await upload.text()}`);
    }
  }, 420_000);

  afterAll(async () => {
    for (const process of agents) await process.kill("SIGKILL");
    await dev?.stop();
    if (hostConfigDir) await destroyAgentHomeservers(hostConfigDir).catch((error) => console.warn(`[backup faults e2e] cleanup failed: ${String(error)}`));
    await runCleanups();
  }, 120_000);

  beforeEach((context) => {
    context.onTestFailed(() => {
      console.error(`--- agent ${agent()?.label} ---\n${agent()?.logTail(40)}\n--- wrangler dev ---\n${dev?.logTail(40)}`);
    });
  });

  it("a first backup succeeds: several parts of ciphertext", { timeout: 300_000 }, async () => {
    const { id } = await customer.expect<{ id: string }>(202, "POST", `/api/servers/${server.id}/backups`);
    backups.first = await untilFinished(id);
    expect(backups.first).toMatchObject({ status: "succeeded" });
    expect(backups.first.sizeBytes!).toBeGreaterThan(MEDIA_FILES * MEDIA_FILE_BYTES);
  });

  it("the agent killed mid-upload: the backup is not marked successful; the restarted agent runs it again to success", { timeout: 300_000 }, async () => {
    const id = await backupUnderWay();
    await agent().kill("SIGKILL");
    const cut = await backupNamed(id);
    expect(cut.status).not.toBe("succeeded");
    await startAgent();
    const finished = await untilFinished(id);
    expect(finished.status).toBe("succeeded");
    backups.afterKill = finished;
    expect(await backupNamed(backups.first!.id)).toMatchObject({ status: "succeeded", sizeBytes: backups.first!.sizeBytes });
  });

  it("the Worker restarted mid-upload: the agent's retries carry the upload through, or it fails; never a false success", { timeout: 300_000 }, async () => {
    const id = await backupUnderWay();
    await dev.stop();
    await dev.start();
    const finished = await untilFinished(id);
    expect(["succeeded", "failed"]).toContain(finished.status);
    backups.afterRestart = finished;
    for (const earlier of [backups.first!, backups.afterKill!]) {
      expect(await backupNamed(earlier.id)).toMatchObject({ status: "succeeded", sizeBytes: earlier.sizeBytes });
    }
  });

  it("the backups marked successful restore: the user and the media are back", { timeout: 300_000 }, async () => {
    const restorable = [backups.afterRestart!, backups.afterKill!].find((b) => b.status === "succeeded")!;
    await customer.expect(202, "POST", `/api/servers/${server.id}/restore`, { backupId: restorable.id });
    await waitFor(
      "the restore to finish",
      async () => {
        const view = await customer.expect<ServerView>(200, "GET", `/api/servers/${server.id}`);
        if (view.lastJob?.kind !== "homeserver.restore") return undefined;
        if (view.lastJob.status === "failed") throw new Fatal(`the restore failed: ${view.lastJob.error}`);
        return view.lastJob.status === "succeeded" && view.status === "running";
      },
      { timeoutMs: 240_000, intervalMs: 1_000 },
    );
    expect(await login()).toBe(200);
    const media = await run("du", ["-sb", join(serverDir(), "synapse", "media_store", "local_content")]);
    expect(Number(media.stdout.toString("utf8").split("\t")[0])).toBeGreaterThanOrEqual(MEDIA_FILES * MEDIA_FILE_BYTES);
  });
});
