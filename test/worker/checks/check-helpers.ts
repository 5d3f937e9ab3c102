import { env } from "cloudflare:workers";
import { enrolledHost, type HostIdentity } from "../fleet/fleet-helpers";
import { logIn, verifiedUser } from "../helpers";
import { database } from "../../../worker/db/client";
import { checkResults, type CheckResultRow } from "../../../worker/db/schema";
import type { CheckId, CheckResultKind } from "../../../worker/checks/registry";

/** A homeserver row on the host, with an owner of its own whose email names it. */
export async function homeserverOn(hostId: string | null): Promise<{ id: string; name: string; userId: string; email: string }> {
  const id = crypto.randomUUID();
  const name = `hs-${id.slice(0, 8)}`;
  const email = `owner-${name}@example.com`;
  const at = Date.now();
  await env.DB.batch([
    env.DB.prepare("INSERT INTO users (id, email, password_hash, created_at, updated_at) VALUES (?, ?, 'unusable', ?, ?)").bind(id, email, at, at),
    env.DB.prepare(
      "INSERT INTO servers (id, user_id, name, region, host_id, status, created_at, updated_at) VALUES (?, ?, ?, 'us-east', ?, 'running', ?, ?)",
    ).bind(id, id, name, hostId, at, at),
  ]);
  return { id, name, userId: id, email };
}

/** Records one result as the checks' recording does, and returns the inserted row. */
export async function recordResult(
  server: { id: string; userId: string },
  checkId: CheckId,
  result: CheckResultKind,
  checkedAt: Date,
  summary = `${checkId} ${result} at ${checkedAt.toISOString()}`,
): Promise<CheckResultRow> {
  const [row] = await database(env.DB)
    .insert(checkResults)
    .values({ id: crypto.randomUUID(), userId: server.userId, serverId: server.id, checkId, result, summary, facts: "[]", checkedAt, jobId: null })
    .returning();
  return row!;
}

export interface Fleet {
  operator: { email: string; cookie: string };
  customer: { email: string; cookie: string };
  host: HostIdentity;
}

/** A verified operator, a verified customer (with nothing of their own) and a host the operator enrolled. */
export async function fleetWithOperator(): Promise<Fleet> {
  const operator = await verifiedUser();
  await env.DB.prepare("UPDATE users SET role = 'operator' WHERE email = ?").bind(operator.email).run();
  const operatorCookie = await logIn(operator.email);
  const customer = await verifiedUser();
  return {
    operator: { email: operator.email, cookie: operatorCookie },
    customer: { email: customer.email, cookie: await logIn(customer.email) },
    host: await enrolledHost(operatorCookie),
  };
}
