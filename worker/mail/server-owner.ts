import { eq } from "drizzle-orm";
import type { WorkContext } from "../context";
import { servers, users } from "../db/schema";
import { logError } from "../logging";
import { matrixServerNameOf } from "../servers/servers";
import { mailerFor, type Mail } from "./mailer";

/**
 * Mails the account that asked for something on its homeserver (an export, an import), naming the
 * homeserver by its Matrix name. A courtesy: what it says is on the dashboard too, so a mail that
 * cannot be sent is logged (`failureEvent`, with `detail`), never raised.
 */
export async function mailServerOwner(
  ctx: WorkContext,
  asked: { userId: string; serverId: string },
  compose: (owner: { email: string; serverName: string }) => Mail,
  failureEvent: string,
  detail: Record<string, string>,
): Promise<void> {
  const [owner] = await ctx.db
    .select({ email: users.email, name: servers.name, serverName: servers.serverName })
    .from(servers)
    .innerJoin(users, eq(users.id, asked.userId))
    .where(eq(servers.id, asked.serverId));
  if (!owner) return;
  try {
    await mailerFor(ctx).send(compose({ email: owner.email, serverName: matrixServerNameOf(ctx.config, owner) }));
  } catch (error) {
    logError(failureEvent, error, detail);
  }
}
