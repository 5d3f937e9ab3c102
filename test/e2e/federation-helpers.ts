// Helpers for test/e2e/federation.test.ts (homeserver-helpers.ts has the rest: the paying
// customer, HTTPS through Caddy, the Matrix clients): a homeserver's user made through the
// product's API as its owner would, and what a user's attempt to reach a room of another server
// comes to, as an outcome to assert (joined or refused, delivered or not) rather than a throw, so
// that the cases of the federation settings (off, an allow-list) are a few lines each. And the
// customer's own domain: a local site standing in for it, which publishes what its owner would.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { MatrixClient } from "matrix-js-sdk";
import { Fatal, waitFor, type Api } from "./agent-helpers";
import { administered, passwordLogin, type FetchFn, type Login, type ServerView } from "./homeserver-helpers";

/**
 * A user of `server` made by its owner (`api`, logged in as the owner) through the API, its password
 * set through its one-time link, then logged in over HTTPS.
 */
export async function createLoggedInUser(api: Api, fetchFn: FetchFn, server: ServerView, localpart: string, password: string): Promise<Login> {
  const created = await administered<{ userId: string; passwordLink: { url: string } }>(api, "POST", `/api/servers/${server.id}/users`, { localpart });
  const token = new URL(created.passwordLink.url).searchParams.get("token");
  const setting = await api.request<{ status: string }>("POST", `/api/servers/${server.id}/users/${encodeURIComponent(created.userId)}/password`, {
    token,
    password,
  });
  if (setting.status !== 200 && setting.status !== 202) throw new Error(`setting ${created.userId}'s password answered ${setting.status}`);
  // "setting" (202): the host is still writing it; a log-in works once it has.
  return waitFor(`a log-in as ${created.userId}`, () => passwordLogin(fetchFn, server.homeserverUrl, localpart, password), {
    timeoutMs: 90_000,
    intervalMs: 1_000,
  });
}

/**
 * `server` forgets any backoff it keeps for `destination`, through Synapse's admin API as `admin`
 * (one of its Synapse admins). A homeserver that a settings change restarts answers 502 for a few
 * seconds; a server that happens to reach it then (its user directory refreshing remote profiles,
 * say) waits 10 minutes before trying it again, joins included, whatever the new settings allow.
 */
export async function forgetBackoff(fetchFn: FetchFn, server: ServerView, admin: Login, destination: string): Promise<void> {
  const url = `${server.homeserverUrl}/_synapse/admin/v1/federation/destinations/${encodeURIComponent(destination)}/reset_connection`;
  const response = await fetchFn(url, { method: "POST", headers: { authorization: `Bearer ${admin.accessToken}` } });
  if (response.ok) return;
  const body = await response.text();
  // Synapse's answers when there is nothing to forget: no backoff kept (400), or the destination never tried (404).
  if ((response.status === 400 && body.includes("does not need to be reset")) || (response.status === 404 && body.includes("M_NOT_FOUND"))) return;
  throw new Error(`resetting ${server.serverName}'s connection to ${destination} answered ${response.status}: ${body}`);
}

export type JoinOutcome = { joined: true; roomId: string } | { joined: false; errcode: string; error: string };

/** `client`'s user joins `room` (an id or alias) of another server, which its own server asks over federation (`via`: the room's server). */
export async function joinAcross(client: MatrixClient, room: string, via: string): Promise<JoinOutcome> {
  try {
    const joined = await client.joinRoom(room, { viaServers: [via] });
    return { joined: true, roomId: joined.roomId };
  } catch (error) {
    const { errcode, message } = error as { errcode?: string; message?: string };
    return { joined: false, errcode: errcode ?? "none", error: message ?? String(error) };
  }
}

/**
 * `sender` sends `body` to `roomId`; the outcome says whether `receiver`, a member on another
 * server, got it (decrypted, in an encrypted room) within `timeoutMs`.
 */
export async function sendAcross(
  sender: MatrixClient,
  receiver: MatrixClient,
  roomId: string,
  body: string,
  { timeoutMs = 60_000 } = {},
): Promise<{ delivered: true; eventId: string; encrypted: boolean } | { delivered: false; why: string }> {
  const { event_id } = await sender.sendTextMessage(roomId, body);
  try {
    const event = await waitFor(
      `${receiver.getUserId()} to see ${event_id}`,
      async () => {
        const seen = receiver.getRoom(roomId)?.findEventById(event_id);
        if (!seen) return undefined;
        if (seen.isBeingDecrypted()) await seen.getDecryptionPromise?.();
        if (seen.isDecryptionFailure()) throw new Fatal(`${event_id} did not decrypt: ${seen.decryptionFailureReason}`);
        return seen.getContent().body === body ? seen : undefined;
      },
      { timeoutMs, intervalMs: 200 },
    );
    return { delivered: true, eventId: event_id, encrypted: event.isEncrypted() };
  } catch (error) {
    return { delivered: false, why: (error as Error).message };
  }
}

/** The dashboard's delegation view of a homeserver on its owner's own domain (what these tests read of it). */
export interface DelegationView {
  status: string;
  wellKnown: Record<"server" | "client", { url: string; document: unknown; headers: Record<string, string> }>;
  check: { result: string; summary: string } | null;
  checking: boolean;
}

/**
 * A local site standing in for a customer's own domain (`npm run dev -- --stand-in-domain <domain>=127.0.0.1:<port>`
 * proxies the domain to it): every path answers 404 until its owner publishes the dashboard's well-knowns.
 */
export async function standInSite(): Promise<{ port: number; publish(view: DelegationView): void; close(): void }> {
  const published = new Map<string, { headers: Record<string, string>; document: unknown }>();
  const site = createServer((req, res) => {
    const page = published.get(req.url ?? "");
    if (!page) res.writeHead(404, { "content-type": "text/plain" }).end("not published");
    else res.writeHead(200, page.headers).end(JSON.stringify(page.document));
  });
  await new Promise<void>((resolve) => site.listen(0, "127.0.0.1", resolve));
  return {
    port: (site.address() as AddressInfo).port,
    publish: (view) => {
      for (const page of [view.wellKnown.server, view.wellKnown.client])
        published.set(new URL(page.url).pathname, { headers: page.headers, document: page.document });
    },
    close: () => {
      site.closeAllConnections();
      site.close();
    },
  };
}
