// What the homeserver handlers need of the host's reverse proxy (implemented for
// Caddy in agent/proxy/caddy.ts). The proxy runs on the host and reaches each
// Synapse at its container's address on the customer's -hs bridge network.

export interface HomeserverProxy {
  /** Serve `serverName` from `upstream` (idempotent; replaces a "suspended" answer); bodies up to `maxBodyBytes` (Synapse's max_upload_size). */
  route(serverName: string, upstream: { host: string; port: number }, limits: { maxBodyBytes: number }): Promise<void>;
  /** Answer 503 "suspended" for that name instead of the homeserver. */
  suspend(serverName: string): Promise<void>;
  remove(serverName: string): Promise<void>;
}
