// A Synapse with PostgreSQL as people run it outside Berth, from the images images/build.sh builds:
// PostgreSQL initialised by its image's entrypoint, and Synapse on its own generated configuration
// (the database section replaced, the listener open), on a Docker network of the test's own. Where
// an export is restored (full-export.test.ts) and where a self-hosted homeserver comes from before
// it is imported (import.test.ts, and through the dashboard in test/e2e/import-stock.test.ts): its
// users leave an encrypted room and a public one, its owner archives it by hand with README.md's
// commands, and they read their history wherever it went.
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Preset } from "matrix-js-sdk";
import { expect } from "vitest";
import { signingKeyFileName } from "../../../agent/homeserver/secrets.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { type FetchFn, messageBodies, sdkPasswordLogin, startCryptoClient, stopClient } from "../../matrix-clients.ts";
import { shell } from "../backup/helpers.ts";
import { waitFor } from "../helpers.ts";
import { POSTGRES_IMAGE, SYNAPSE_IMAGE, TEST_RUN_LABEL } from "./helpers.ts";

/** The uid the stock PostgreSQL and Synapse run as (the test runs as root and gives them their data directories). */
const STOCK_UID = 70991;
const DB_PASSWORD = "stock-password";

export class StockSynapse {
  /** The network, and the prefix of its containers' names. */
  readonly net: string;
  /** Synapse's /data: its configuration, signing key and media store. */
  readonly data: string;
  private readonly label: string;

  /** `root`: a directory of the test's own; `prefix`: its run's, which its cleanup removes containers and networks by. */
  constructor(
    prefix: string,
    private readonly root: string,
    readonly serverName: string,
  ) {
    this.label = `--label ${TEST_RUN_LABEL}=${prefix}`;
    this.net = `${prefix}-stock`;
    this.data = join(root, "synapse-data");
  }

  get postgres(): string {
    return `${this.net}-db`;
  }

  get synapse(): string {
    return `${this.net}-synapse`;
  }

  /** PostgreSQL with an empty `synapse` database owned by `synapse`, as the image's entrypoint makes it. */
  startPostgres(): void {
    const pgdata = join(this.root, "postgres-data");
    mkdirSync(pgdata);
    // The locally built image runs as an unprivileged uid (the official one as its own user).
    shell(`chown ${STOCK_UID}:${STOCK_UID} ${pgdata}`);
    shell(`docker network create ${this.label} ${this.net}`);
    shell(
      `docker run -d ${this.label} --user ${STOCK_UID}:${STOCK_UID} -v ${pgdata}:/var/lib/postgresql/data --name ${this.postgres} --network ${this.net} ` +
        `-e POSTGRES_USER=synapse -e POSTGRES_PASSWORD=${DB_PASSWORD} -e POSTGRES_INITDB_ARGS="--encoding=UTF8 --locale=C" ${POSTGRES_IMAGE}`,
    );
    shell(`for i in $(seq 120); do docker exec ${this.postgres} pg_isready -q -h 127.0.0.1 -U synapse && exit 0; sleep 1; done; exit 1`);
  }

  /** A command against the database, with its password (`pg_restore`, `pg_dump`, `psql`…): `docker exec` and what follows. */
  dbExec(command: string): string {
    return `docker exec -i -e PGPASSWORD=${DB_PASSWORD} ${this.postgres} ${command}`;
  }

  psql(query: string): string {
    return shell(`${this.dbExec("psql -U synapse -d synapse -At")} -c "${query}"`).trim();
  }

  /** Synapse's own configuration for the server name, as its `--generate-config` writes it (with a signing key of its own). */
  generateConfig(): void {
    mkdirSync(this.data);
    shell(`chown ${STOCK_UID}:${STOCK_UID} ${this.data}`);
    this.runSynapse(
      `${SYNAPSE_IMAGE} --generate-config --server-name ${this.serverName} --report-stats=no --config-path /data/homeserver.yaml --data-directory /data`,
    );
  }

  /**
   * The database section replaced and the listener opened (the official image's generated one is
   * open; Synapse's own listens on loopback), with Synapse's own YAML library; `more` are further
   * Python lines run on `config` before it is written.
   */
  editConfig(more: string[] = []): void {
    shell(`chown -R ${STOCK_UID}:${STOCK_UID} ${this.data}`);
    writeFileSync(
      join(this.root, "edit-config.py"),
      [
        "import yaml",
        'config = yaml.safe_load(open("/data/homeserver.yaml"))',
        `config["database"] = {"name": "psycopg2", "args": {"user": "synapse", "password": "${DB_PASSWORD}", "dbname": "synapse", "host": "${this.postgres}", "cp_min": 5, "cp_max": 10}}`,
        ...more,
        'for listener in config["listeners"]: listener["bind_addresses"] = ["0.0.0.0"]',
        'yaml.safe_dump(config, open("/data/homeserver.yaml", "w"))',
        "",
      ].join("\n"),
    );
    this.runSynapse(`-v ${this.root}/edit-config.py:/edit-config.py:ro --entrypoint /opt/synapse/bin/python ${SYNAPSE_IMAGE} /edit-config.py`);
  }

  /** Starts Synapse and waits until it answers; its client-server base URL. */
  async start(): Promise<string> {
    shell(`docker run -d ${this.label} --user ${STOCK_UID}:${STOCK_UID} --name ${this.synapse} --network ${this.net} -v ${this.data}:/data ${SYNAPSE_IMAGE}`);
    const ip = shell(`docker inspect -f '{{(index .NetworkSettings.Networks "${this.net}").IPAddress}}' ${this.synapse}`).trim();
    const base = `http://${ip}:8008`;
    await waitFor(
      async () => {
        if (shell(`docker inspect -f '{{.State.Running}}' ${this.synapse}`).trim() !== "true") {
          throw new Error(`stock Synapse stopped: ${shell(`docker logs --tail 40 ${this.synapse} 2>&1`)}`);
        }
        return (await fetch(`${base}/health`).catch(() => undefined))?.ok;
      },
      "stock Synapse to answer /health",
      180_000,
    );
    return base;
  }

  /** Stops Synapse, as its owner does before archiving it, so that nothing writes meanwhile. */
  stop(): void {
    shell(`docker stop ${this.synapse}`);
  }

  /**
   * What its users leave, as people use a homeserver: alice and bob made by its admin's command,
   * alice's encrypted room with a message (her room keys exported, as Element saves them) and her
   * public room with a message and bob's reply.
   */
  async leaveHistory(base: string): Promise<StockHistory> {
    const passwords = { alice: `alice ${randomBytes(6).toString("hex")}`, bob: `bob ${randomBytes(6).toString("hex")}` };
    for (const [user, password] of Object.entries(passwords)) {
      shell(
        `docker exec ${this.synapse} /opt/synapse/bin/register_new_matrix_user -u ${user} -p '${password}' --no-admin -c /data/homeserver.yaml http://localhost:8008`,
      );
    }
    const history = {
      passwords,
      secret: `the committee's shortlist ${randomBytes(4).toString("hex")}`,
      message: `the minutes of the allotment committee ${randomBytes(4).toString("hex")}`,
      reply: `see you at the plots ${randomBytes(4).toString("hex")}`,
    };
    const alice = await startCryptoClient(fetch, base, await sdkPasswordLogin(fetch, base, "alice", passwords.alice));
    let rooms: Pick<StockHistory, "encryptedRoomId" | "publicRoomId" | "roomKeys">;
    try {
      const encryption = { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } };
      const encryptedRoomId = (await alice.createRoom({ preset: Preset.PrivateChat, name: "shortlist", initial_state: [encryption] })).room_id;
      await waitFor(
        async () => alice.getRoom(encryptedRoomId) && (await alice.getCrypto()!.isEncryptionEnabledInRoom(encryptedRoomId)),
        "the encrypted room",
        30_000,
      );
      await alice.sendTextMessage(encryptedRoomId, history.secret);
      const publicRoomId = (await alice.createRoom({ preset: Preset.PublicChat, name: "allotments" })).room_id;
      await alice.sendTextMessage(publicRoomId, history.message);
      rooms = { encryptedRoomId, publicRoomId, roomKeys: await alice.getCrypto()!.exportRoomKeysAsJson() };
    } finally {
      await stopClient(alice);
    }
    const bob = await sdkPasswordLogin(fetch, base, "bob", passwords.bob);
    const room = encodeURIComponent(rooms.publicRoomId);
    expect((await requestJson(`${base}/_matrix/client/v3/join/${room}`, { method: "POST", token: bob.accessToken, body: {} })).status).toBe(200);
    const sent = await requestJson(`${base}/_matrix/client/v3/rooms/${room}/send/m.room.message/reply-1`, {
      method: "PUT",
      token: bob.accessToken,
      body: { msgtype: "m.text", body: history.reply },
    });
    expect(sent.status).toBe(200);
    return { ...history, ...rooms };
  }

  /**
   * Its owner archives it as README.md says: Synapse stopped, then in an empty directory `dir` the
   * dump, the signing key, the media store, and the POSIX tar of them; the archive's path.
   */
  archiveByHand(dir: string): string {
    this.stop();
    mkdirSync(dir);
    // A Synapse that never stored a file has no media store yet; the README's `cp -r` wants one.
    mkdirSync(join(this.data, "media_store"), { recursive: true });
    const signingKey = signingKeyFileName(this.serverName);
    shell(
      `${this.dbExec("pg_dump --format=custom -U synapse -d synapse")} > synapse.dump && cp ${this.data}/${signingKey} . && cp -r ${this.data}/media_store . && ` +
        `tar --format=posix -czf synapse-archive.tar.gz synapse.dump ${signingKey} media_store`,
      dir,
    );
    return join(dir, "synapse-archive.tar.gz");
  }

  /** Removes its containers and network, wherever it got to (its directories are the caller's). */
  remove(): void {
    shell(`docker rm -f ${this.synapse} ${this.postgres} >/dev/null 2>&1; docker network rm ${this.net} >/dev/null 2>&1; true`);
  }

  private runSynapse(args: string): void {
    shell(`docker run --rm ${this.label} --user ${STOCK_UID}:${STOCK_UID} -v ${this.data}:/data ${args}`);
  }
}

/** What a stock Synapse's users left (StockSynapse.leaveHistory), and what they need to read it again. */
export interface StockHistory {
  passwords: Record<"alice" | "bob", string>;
  encryptedRoomId: string;
  publicRoomId: string;
  /** alice's message in the encrypted room. */
  secret: string;
  /** alice's message in the public room, and bob's reply. */
  message: string;
  reply: string;
  /** alice's room keys, exported as Element saves them. */
  roomKeys: string;
}

/**
 * The history read again at `base` (the homeserver it moved to, named `serverName` still): both log
 * in with the passwords they had; alice reads everything, her encrypted message with her exported
 * room keys, and bob the public room.
 */
export async function expectStockHistoryAt(fetchFn: FetchFn, base: string, serverName: string, history: StockHistory): Promise<void> {
  const aliceLogin = await sdkPasswordLogin(fetchFn, base, "alice", history.passwords.alice);
  expect(aliceLogin.userId).toBe(`@alice:${serverName}`);
  const alice = await startCryptoClient(fetchFn, base, aliceLogin, { roomKeys: history.roomKeys });
  try {
    await waitFor(
      async () => (await messageBodies(alice, history.encryptedRoomId)).includes(history.secret),
      "the encrypted message, decrypted with her room keys",
      60_000,
    );
    await waitFor(async () => (await messageBodies(alice, history.publicRoomId)).includes(history.reply), "bob's reply", 60_000);
  } finally {
    await stopClient(alice);
  }
  const bob = await startCryptoClient(fetchFn, base, await sdkPasswordLogin(fetchFn, base, "bob", history.passwords.bob));
  try {
    await waitFor(async () => (await messageBodies(bob, history.publicRoomId)).includes(history.message), "alice's message in the public room", 60_000);
  } finally {
    await stopClient(bob);
  }
}
