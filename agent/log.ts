// Structured logs: one JSON object per line on stdout (journald keeps them),
// {"time","level","msg",...fields}. Secrets never belong in fields; as a second
// line of defence, fields whose names look secret are replaced before writing.

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const RESERVED = new Set(["time", "level", "msg"]);
/** Field names whose values are never written. */
const SECRET_FIELD = /token|secret|password|private|signature|passphrase|credential|authorization|cookie/i;

export interface LoggerOptions {
  /** Receives each finished line (without the newline). Default: process.stdout. */
  write?: (line: string) => void;
  level?: LogLevel;
  base?: LogFields;
  now?: () => Date;
}

export function parseLogLevel(value: string | undefined): LogLevel {
  return value === "debug" || value === "info" || value === "warn" || value === "error" ? value : "info";
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const write = options.write ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const min = RANK[options.level ?? "info"];
  const now = options.now ?? (() => new Date());

  const make = (base: LogFields): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
      if (RANK[level] < min) return;
      const line: Record<string, unknown> = { time: now().toISOString(), level, msg };
      for (const source of [base, fields ?? {}]) {
        for (const [key, value] of Object.entries(source)) {
          if (value === undefined) continue;
          const name = RESERVED.has(key) ? `field.${key}` : key;
          line[name] = SECRET_FIELD.test(key) ? "[redacted]" : toLoggable(value);
        }
      }
      let text: string;
      try {
        text = JSON.stringify(line);
      } catch {
        text = JSON.stringify({ time: line.time, level, msg, note: "fields could not be serialised" });
      }
      write(text);
    };
    return {
      debug: (msg, fields) => emit("debug", msg, fields),
      info: (msg, fields) => emit("info", msg, fields),
      warn: (msg, fields) => emit("warn", msg, fields),
      error: (msg, fields) => emit("error", msg, fields),
      child: (fields) => make({ ...base, ...fields }),
    };
  };
  return make(options.base ?? {});
}

function toLoggable(value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, message: value.message, ...(typeof code === "string" ? { code } : {}) };
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

/** Error message of anything thrown, for logs and job results. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  if (typeof error === "string") return error;
  try {
    return JSON.stringify(error) ?? String(error);
  } catch {
    return String(error);
  }
}

/** A logger that drops everything (tests, library defaults). */
export const silentLogger: Logger = createLogger({ write: () => {} });
