// A Synapse with PostgreSQL as people run it outside Berth, from the images images/build.sh builds:
// PostgreSQL initialised by its image's entrypoint, and Synapse on its own generated configuration
// (the database section replaced, the listener open), on a Docker network of the test's own. Where
// an export is restored (full-export.test.ts) and where a self-hosted homeserver comes from before
// it is imported (import.test.ts).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
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

  private runSynapse(args: string): void {
    shell(`docker run --rm ${this.label} --user ${STOCK_UID}:${STOCK_UID} -v ${this.data}:/data ${args}`);
  }
}
