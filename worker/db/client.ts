import { drizzle } from "drizzle-orm/d1";
import * as schema from "./schema";

export function database(d1: D1Database) {
  return drizzle(d1, { schema });
}

export type Database = ReturnType<typeof database>;

function failedWith(error: unknown, message: string): boolean {
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    if (cause.message.includes(message)) return true;
  }
  return false;
}

/** Whether a query failed on a unique index (the database settled a race): D1's message, through drizzle's wrapping. */
export const isUniqueViolation = (error: unknown) => failedWith(error, "UNIQUE constraint failed");

/** Whether a query failed on a foreign key (the row it names does not exist): D1 enforces them. */
export const isForeignKeyViolation = (error: unknown) => failedWith(error, "FOREIGN KEY constraint failed");
