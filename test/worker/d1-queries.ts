import { env } from "cloudflare:workers";

// Counts D1 round trips made anywhere in this isolate (the Worker's requests and the Durable
// Objects run in the tests' isolate), in order with the job messages sent over WebSockets, by
// wrapping the D1 binding's methods that go to the database: a statement's first/all/run/raw,
// and batch and exec (one round trip each, whatever they hold).

export type Entry = { kind: "query"; sql: string } | { kind: "sent"; type: string };

const STATEMENT_METHODS = ["first", "all", "run", "raw"] as const;
const DATABASE_METHODS = ["batch", "exec"] as const;

let log: Entry[] | null = null;
// A method that calls another of these (first → all, say) is one round trip: count the outermost only.
let depth = 0;

function wrap(prototype: any, name: string, describe: (self: any, args: unknown[]) => string) {
  const original = prototype[name];
  prototype[name] = function (this: unknown, ...args: unknown[]) {
    if (log && depth === 0) log.push({ kind: "query", sql: describe(this, args) });
    depth++;
    try {
      return original.apply(this, args);
    } finally {
      depth--;
    }
  };
  return () => {
    prototype[name] = original;
  };
}

const statementSql = (statement: any) => String(statement.statement ?? statement.query ?? "?");

/** A batch as "batch of N: <sql> | <sql> …", so a test can see what travels together. */
const batchOf = (statements: unknown[]) => `batch of ${statements.length}: ${statements.map(statementSql).join(" | ")}`;

/** Records D1 round trips and job messages sent until the returned `stop()`; `entries` is the log so far. */
export function recordD1(): { entries: Entry[]; stop: () => void } {
  const entries: Entry[] = [];
  log = entries;
  const statement = Object.getPrototypeOf(env.DB.prepare("SELECT 1"));
  const database = Object.getPrototypeOf(env.DB);
  const sendPrototype = WebSocket.prototype as any;
  const originalSend = sendPrototype.send;
  sendPrototype.send = function (this: WebSocket, data: unknown) {
    if (log && typeof data === "string" && data.startsWith('{"type":')) log.push({ kind: "sent", type: JSON.parse(data).type });
    return originalSend.call(this, data);
  };
  const restores = [
    ...STATEMENT_METHODS.map((name) => wrap(statement, name, statementSql)),
    ...DATABASE_METHODS.map((name) => wrap(database, name, (_self, args) => (name === "batch" ? batchOf(args[0] as unknown[]) : String(args[0])))),
    () => {
      sendPrototype.send = originalSend;
    },
  ];
  return {
    entries,
    stop: () => {
      log = null;
      for (const restore of restores) restore();
    },
  };
}

/** The D1 round trips before the first message of `type` was sent, and those after it. */
export function queriesAround(entries: Entry[], type: string): { before: string[]; after: string[] } {
  const at = entries.findIndex((entry) => entry.kind === "sent" && entry.type === type);
  if (at < 0) throw new Error(`no ${type} message was sent`);
  const sqlOf = (list: Entry[]) => list.flatMap((entry) => (entry.kind === "query" ? [entry.sql] : []));
  return { before: sqlOf(entries.slice(0, at)), after: sqlOf(entries.slice(at + 1)) };
}
