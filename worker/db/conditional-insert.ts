import { getTableColumns, is, SQL, sql } from "drizzle-orm";
import type { SQLiteTable } from "drizzle-orm/sqlite-core";
import type { Database } from "./client";

/**
 * `INSERT INTO table (…) SELECT <row> WHERE condition`: one row, written only
 * if `condition` holds when the statement runs. SQLite runs a statement (and
 * D1 a batch) on its own, so a check made here cannot be raced the way a
 * read followed by an insert can. Values are encoded by their columns, as
 * drizzle's own inserts do, and a column left out gets its default.
 */
export function insertWhere<T extends SQLiteTable>(db: Database, table: T, row: T["$inferInsert"], condition: SQL) {
  const values = Object.entries(getTableColumns(table))
    // As drizzle does: a generated column takes no value.
    .filter(([, column]) => column.generated === undefined || column.generated.type === "byDefault")
    .map(([key, column]) => {
      const value = (row as Record<string, unknown>)[key];
      if (value !== undefined) return sql.param(value, column);
      if (column.default !== undefined && column.default !== null) return is(column.default, SQL) ? column.default : sql.param(column.default, column);
      if (column.defaultFn) {
        const made = column.defaultFn();
        return is(made, SQL) ? made : sql.param(made, column);
      }
      return sql`null`;
    });
  return db.insert(table).select(sql`SELECT ${sql.join(values, sql`, `)} WHERE ${condition}`);
}
