/** The record types a homeserver's name gets: IPv4 always, IPv6 when its host has one. */
export type RecordType = "A" | "AAAA";

/** A record as Berth wants it: which server it is for is stored with it, so records we made are told from any other. */
export interface DesiredRecord {
  type: RecordType;
  /** Fully qualified, lower-case: <name>.<HOMESERVER_DOMAIN>. */
  name: string;
  /** The address it resolves to. */
  content: string;
  serverId: string;
}

/** A record as the provider holds it; `serverId` is null for records Berth did not make. */
export interface DnsRecord extends Omit<DesiredRecord, "serverId"> {
  id: string;
  serverId: string | null;
}

/**
 * The few operations on a DNS zone Berth needs. Every failure is a DnsError, whose reason is safe
 * to show a customer and to log: never the credential, never the provider's raw answer.
 */
export interface DnsProvider {
  /** Every record of the zone Berth made (for the cron's reconciliation). */
  listManaged(): Promise<DnsRecord[]>;
  /** The A and AAAA records of one name, Berth's or not. */
  recordsNamed(name: string): Promise<DnsRecord[]>;
  create(record: DesiredRecord): Promise<DnsRecord>;
  /** Changes the record `id` into `record`; a DnsError with `missing` when it no longer exists. */
  update(id: string, record: DesiredRecord): Promise<DnsRecord>;
  /** Deletes `id`; one already gone counts as deleted. */
  delete(id: string): Promise<void>;
}

export class DnsError extends Error {
  constructor(
    /** What went wrong, in our words (the customer sees it after "waiting for DNS: "). */
    readonly reason: string,
    /** The record named does not exist (any more). */
    readonly missing = false,
  ) {
    super(reason);
    this.name = "DnsError";
  }
}

/** How Berth marks the records it made (Cloudflare's comment field): the server each is for. */
export const MANAGED_COMMENT_PREFIX = "berth:server:";

export function managedComment(serverId: string): string {
  return `${MANAGED_COMMENT_PREFIX}${serverId}`;
}

export function serverIdOfComment(comment: string | null | undefined): string | null {
  return comment?.startsWith(MANAGED_COMMENT_PREFIX) ? comment.slice(MANAGED_COMMENT_PREFIX.length) || null : null;
}
