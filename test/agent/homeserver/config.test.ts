// Unit tests of what the agent generates for a homeserver: Synapse's config,
// secrets and signing key, container specs, uids, firewall rules, inventory states.
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, linkSync, lstatSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DEFAULT_HOMESERVER_SETTINGS } from "../../../protocol/homeserver-settings.ts";
import {
  BLOCKED_IPV4,
  blockedRanges,
  cacheSizing,
  homeserverConfig,
  ipv4Covered,
  renderHomeserverConfig,
  type HomeserverConfigInput,
} from "../../../agent/homeserver/config.ts";
import { assertNoDockerSocket, postgresContainer, splitResources, synapseContainer, upkeepContainer } from "../../../agent/homeserver/containers.ts";
import { hostsFileContent, localFederationOptions } from "../../../agent/homeserver/local-federation.ts";
import { homeserverNames, homeserverPaths, shortIdOf } from "../../../agent/homeserver/names.ts";
import { ConfigError } from "../../../agent/config.ts";
import { parseProxyConfig } from "../../../agent/proxy/caddy-config.ts";
import {
  SECRET_FILES,
  ensureDataDirs,
  ensureSecrets,
  ensureSigningKey,
  generateSigningKey,
  parseSigningKey,
  writeOwnedFile,
} from "../../../agent/homeserver/secrets.ts";
import { UidAllocator } from "../../../agent/homeserver/uids.ts";
import { STORAGE_RESERVE_MODULE_SOURCE } from "../../../agent/homeserver/storage-reserve-module.ts";
import { USER_LIMIT_MODULE_SOURCE, writeSynapseModules } from "../../../agent/homeserver/user-limit-module.ts";
import { toYaml } from "../../../agent/homeserver/yaml.ts";
import { homeserverState } from "../../../agent/inventory.ts";
import { firewallRules, resolvConfNameservers, splitRule } from "../../../agent/network/firewall.ts";
import { runCleanups, tempDir } from "../helpers.ts";

afterEach(runCleanups);

const secrets = { postgresPassword: "pg", registrationSharedSecret: "reg", macaroonSecretKey: "mac", formSecret: "form" };
const input = (over: Partial<HomeserverConfigInput> = {}): HomeserverConfigInput => ({
  serverName: "chat.example.org",
  publicBaseUrl: "https://chat.example.org/",
  postgresHost: "berth-0123456789ab-postgres",
  postgresUser: "synapse",
  postgresDb: "synapse",
  secrets,
  signingKeyFile: "chat.example.org.signing.key",
  synapseMemoryMiB: 768,
  postgresMemoryMiB: 256,
  dockerSubnets: ["172.17.0.0/16", "192.168.16.0/20", "11.22.0.0/16", "fd00:dead::/64"],
  ...over,
});

describe("homeserver.yaml", () => {
  it("blocks loopback, RFC 1918, link-local, CGNAT, ULA, 0/8, broadcast, multicast, documentation and Docker's pools, for federation and URL previews", () => {
    const config = homeserverConfig(input());
    const outbound = config.ip_range_blacklist as string[];
    const previews = config.url_preview_ip_range_blacklist as string[];
    expect(previews).toEqual(outbound);
    for (const range of [
      "127.0.0.0/8",
      "10.0.0.0/8",
      "172.16.0.0/12",
      "192.168.0.0/16",
      "169.254.0.0/16",
      "fe80::/10",
      "100.64.0.0/10",
      "fc00::/7",
      "0.0.0.0/8",
      "255.255.255.255/32",
      "224.0.0.0/4",
      "ff00::/8",
      "192.0.2.0/24",
      "198.51.100.0/24",
      "203.0.113.0/24",
      "2001:db8::/32",
      "::1/128",
    ]) {
      expect(outbound).toContain(range);
    }
    // Docker subnets: the ones outside the fixed ranges are added, the covered ones need not be
    expect(outbound).toContain("11.22.0.0/16");
    expect(outbound).toContain("fd00:dead::/64");
    expect(outbound).not.toContain("192.168.16.0/20");
    expect(ipv4Covered("192.168.16.0/20", BLOCKED_IPV4)).toBe(true);
    expect(blockedRanges([])).toEqual(blockedRanges(["172.18.0.0/16"]));
  });

  it("turns presence and URL previews off below 1 GiB of Synapse (a Starter), on from there (a Team)", () => {
    expect(homeserverConfig(input({ synapseMemoryMiB: 768 }))).toMatchObject({ url_preview_enabled: false, presence: { enabled: false } });
    expect(homeserverConfig(input({ synapseMemoryMiB: 1536 }))).toMatchObject({ url_preview_enabled: true, presence: { enabled: true } });
  });

  it("closes registration, turns on E2EE for private rooms, reports no stats, listens on all interfaces behind the proxy", () => {
    const config = homeserverConfig(input());
    expect(config.enable_registration).toBe(false);
    expect(config.encryption_enabled_by_default_for_room_type).toBe("invite");
    expect(config.report_stats).toBe(false);
    expect(config.listeners).toEqual([
      {
        port: 8008,
        bind_addresses: ["0.0.0.0"],
        type: "http",
        tls: false,
        x_forwarded: true,
        resources: [{ names: ["client", "federation"], compress: false }],
      },
    ]);
    expect(config.database).toEqual({
      name: "psycopg2",
      args: { user: "synapse", password: "pg", dbname: "synapse", host: "berth-0123456789ab-postgres", port: 5432, cp_min: 1, cp_max: 4 },
    });
    expect(config).toMatchObject({
      server_name: "chat.example.org",
      public_baseurl: "https://chat.example.org/",
      media_store_path: "/data/media_store",
      signing_key_path: "/data/chat.example.org.signing.key",
      log_config: "/data/log.config",
      max_upload_size: "50M",
      registration_shared_secret: "reg",
      macaroon_secret_key: "mac",
      form_secret: "form",
      suppress_key_server_warning: true,
      trusted_key_servers: [{ server_name: "matrix.org" }],
    });
    expect(homeserverConfig(input({ trustedKeyServers: [] })).trusted_key_servers).toEqual([]);
    expect(config).not.toHaveProperty("pid_file");
  });

  it("sizes caches from the container's memory limit, not the host's", () => {
    expect(cacheSizing(768)).toEqual({ globalFactor: 0.38, maxCacheMemoryUsageMiB: 460, targetCacheMemoryUsageMiB: 345 });
    expect(cacheSizing(1536)).toEqual({ globalFactor: 0.75, maxCacheMemoryUsageMiB: 921, targetCacheMemoryUsageMiB: 691 });
    expect(cacheSizing(64).globalFactor).toBe(0.1);
    expect(cacheSizing(65536).globalFactor).toBe(2);
    const small = homeserverConfig(input({ synapseMemoryMiB: 768 })).caches;
    const big = homeserverConfig(input({ synapseMemoryMiB: 3072 })).caches;
    expect(small).toEqual({
      global_factor: 0.38,
      cache_autotuning: { max_cache_memory_usage: "460M", target_cache_memory_usage: "345M", min_cache_ttl: "5m" },
    });
    expect(big).toMatchObject({ global_factor: 1.5, cache_autotuning: { max_cache_memory_usage: "1843M" } });
    // the plan's split decides Synapse's limit
    expect(splitResources({ memoryMiB: 1024, cpus: 1 })).toEqual({ synapse: { memoryMiB: 768, cpus: 0.67 }, postgres: { memoryMiB: 256, cpus: 0.33 } });
    expect(splitResources({ memoryMiB: 2048, cpus: 2 })).toEqual({ synapse: { memoryMiB: 1536, cpus: 1.33 }, postgres: { memoryMiB: 512, cpus: 0.67 } });
  });

  it("without --allow-local-federation (production): the block list whole, no exception, no custom CA, matrix.org as key server", () => {
    const config = homeserverConfig(input());
    expect(config).not.toHaveProperty("ip_range_whitelist");
    expect(config).not.toHaveProperty("federation_ip_range_whitelist");
    expect(config).not.toHaveProperty("federation_custom_ca_list");
    expect(config).not.toHaveProperty("federation_verify_certificates");
    expect(config).not.toHaveProperty("federation_certificate_verification_whitelist");
    expect(config.ip_range_blacklist).toEqual(blockedRanges(input().dockerSubnets));
    expect(config.trusted_key_servers).toEqual([{ server_name: "matrix.org" }]);
    const text = renderHomeserverConfig(input());
    expect(text).not.toMatch(/whitelist|custom_ca|local-federation/);
  });

  it("with --allow-local-federation (development): only the host's address on the server's bridge let through, for federation; the proxy's CA trusted", () => {
    const production = homeserverConfig(input());
    const local = homeserverConfig(input({ localFederation: { hostAddress: "172.18.0.1", caFile: "/data/local-federation-ca.pem" } }));
    expect(local.ip_range_whitelist).toEqual(["172.18.0.1/32"]);
    expect(local.federation_custom_ca_list).toEqual(["/data/local-federation-ca.pem"]);
    // The block lists themselves are unchanged, and URL previews get no exception.
    expect(local.ip_range_blacklist).toEqual(production.ip_range_blacklist);
    expect(local.url_preview_ip_range_blacklist).toEqual(production.url_preview_ip_range_blacklist);
    expect(local).not.toHaveProperty("url_preview_ip_range_whitelist");
    expect(local).not.toHaveProperty("federation_verify_certificates");
    const { ip_range_whitelist: _allowed, federation_custom_ca_list: _ca, ...rest } = local;
    expect(rest).toEqual(production);
    for (const hostAddress of ["172.18.0.0/16", "::1", "chat.example.org", ""]) {
      expect(() => homeserverConfig(input({ localFederation: { hostAddress, caFile: "/data/ca.pem" } }))).toThrow(/not an IPv4 address/);
    }
  });

  it("renders the owner's settings: registration only ever by token, federation off or by allow-list, retention, the upload size", () => {
    const defaults = homeserverConfig(input());
    expect(defaults).toMatchObject({ enable_registration: false, registration_requires_token: true, max_upload_size: "50M" });
    for (const key of ["federation_domain_whitelist", "retention", "media_retention", "enable_registration_without_verification"]) {
      expect(defaults).not.toHaveProperty(key);
    }
    const settings = {
      registration: "token" as const,
      federation: { mode: "allow_list" as const, servers: ["friends.example.org", "other.example:8448"] },
      messageRetentionDays: 30,
      mediaRetentionDays: 7,
      maxUploadMiB: 100,
    };
    const config = homeserverConfig(input({ settings }));
    expect(config).toMatchObject({
      enable_registration: true,
      registration_requires_token: true,
      max_upload_size: "100M",
      federation_domain_whitelist: ["friends.example.org", "other.example:8448"],
      retention: { enabled: true, default_policy: { max_lifetime: "30d" }, allowed_lifetime_max: "30d", purge_jobs: [{ interval: "12h" }] },
      media_retention: { local_media_lifetime: "7d", remote_media_lifetime: "7d" },
    });
    expect(config).not.toHaveProperty("enable_registration_without_verification");
    const off = homeserverConfig(input({ settings: { ...settings, federation: { mode: "off" } } }));
    expect(off.federation_domain_whitelist).toEqual([]);
  });

  it("loads Berth's modules: the user limit, reading the bound from the data directory, the service account exempt; the storage reserve on the data's filesystem", () => {
    const expected = [
      {
        module: "berth_user_limit.UserLimit",
        config: { limit_file: "/data/user-limit", exempt_localparts: ["berth-service"], probe_file: "/usr/local/lib/berth-synapse-modules/probe-localpart" },
      },
      {
        module: "berth_storage_reserve.StorageReserve",
        config: { path: "/data", reserve_fraction: 0.05, reserve_min_bytes: 32 * 1024 * 1024 },
      },
    ];
    expect(homeserverConfig(input()).modules).toEqual(expected);
    expect(homeserverConfig(input({ settings: { ...DEFAULT_HOMESERVER_SETTINGS, registration: "token" } })).modules).toEqual(expected);
    expect(renderHomeserverConfig(input())).toContain(
      '\nmodules:\n  - module: "berth_user_limit.UserLimit"\n    config:\n      limit_file: "/data/user-limit"\n      exempt_localparts:\n        - "berth-service"\n      probe_file: "/usr/local/lib/berth-synapse-modules/probe-localpart"\n  - module: "berth_storage_reserve.StorageReserve"\n    config:\n      path: "/data"\n      reserve_fraction: 0.05\n      reserve_min_bytes: 33554432\n',
    );
  });

  it("writes the modules' sources root's and read-only to Synapse, beside the server's data; a second write changes nothing", () => {
    const paths = homeserverPaths(tempDir(), "3f2a9c1e-7b4d-4e8f-9a01-23456789abcd");
    expect(writeSynapseModules(paths)).toBe(true);
    for (const [name, source, className] of [
      ["berth_user_limit.py", USER_LIMIT_MODULE_SOURCE, "UserLimit"],
      ["berth_storage_reserve.py", STORAGE_RESERVE_MODULE_SOURCE, "StorageReserve"],
    ]) {
      const file = join(paths.synapseModules, name!);
      expect(readFileSync(file, "utf8")).toBe(source);
      expect(source).toContain(`class ${className}:`);
      expect([statSync(file).mode & 0o777, statSync(file).uid]).toEqual([0o644, 0]);
    }
    expect(statSync(paths.synapseModules).mode & 0o777).toBe(0o755);
    expect(writeSynapseModules(paths)).toBe(false);
  });

  it("writes YAML in which every string stays a string", () => {
    const text = renderHomeserverConfig(input({ serverName: "no.example" }));
    expect(text.startsWith("# Synapse configuration of no.example")).toBe(true);
    expect(text).toContain("\nenable_registration: false\n");
    expect(text).toContain('\nencryption_enabled_by_default_for_room_type: "invite"\n');
    expect(text).toContain('\n  - "10.0.0.0/8"\n');
    expect(toYaml({ a: "yes", b: ["x", { c: 1, d: [] }], e: {}, f: null, "g h": 'q"uote\n' })).toBe(
      'a: "yes"\nb:\n  - "x"\n  - c: 1\n    d: []\ne: {}\nf: null\n"g h": "q\\"uote\\n"\n',
    );
  });
});

describe("secrets and the signing key", () => {
  it("are random, 0600 and owned by the server's uid, in 0700 directories; a second run keeps them", () => {
    const paths = homeserverPaths(tempDir(), "srv-1");
    const uid = 234_567;
    ensureDataDirs(paths, uid);
    for (const dir of [paths.synapse, paths.postgres, paths.secrets]) {
      const st = statSync(dir);
      expect([st.mode & 0o777, st.uid, st.gid]).toEqual([0o700, uid, uid]);
    }
    expect([statSync(paths.root).mode & 0o777, statSync(paths.root).uid]).toEqual([0o700, 0]);

    const first = ensureSecrets(paths, uid);
    const otherPaths = homeserverPaths(tempDir(), "srv-2");
    ensureDataDirs(otherPaths, uid);
    const other = ensureSecrets(otherPaths, uid);
    for (const key of Object.keys(first) as Array<keyof typeof first>) {
      expect(first[key].length).toBeGreaterThanOrEqual(43); // ≥ 32 bytes of entropy
      expect(first[key]).not.toBe(other[key]);
      expect(first[key]).toMatch(/^[A-Za-z0-9_-]+$/);
    }
    expect(new Set(Object.values(first)).size).toBe(4);
    for (const name of readdirSync(paths.secrets)) {
      const st = statSync(join(paths.secrets, name));
      expect([name, st.mode & 0o777, st.uid]).toEqual([name, 0o600, uid]);
    }
    expect(readFileSync(join(paths.secrets, SECRET_FILES.pgpass), "utf8")).toBe(`*:*:*:synapse:${first.postgresPassword}\n`);
    // a crash between write and chown left a root-owned file: fixed, content kept
    chownSync(join(paths.secrets, SECRET_FILES.formSecret), 0, 0);
    expect(ensureSecrets(paths, uid)).toEqual(first);
    expect(statSync(join(paths.secrets, SECRET_FILES.formSecret)).uid).toBe(uid);

    const key = ensureSigningKey(paths, "chat.example.org", uid);
    expect(ensureSigningKey(paths, "chat.example.org", uid)).toEqual(key);
    const file = join(paths.synapse, "chat.example.org.signing.key");
    expect([statSync(file).mode & 0o777, statSync(file).uid]).toEqual([0o600, uid]);
    expect(readFileSync(file, "utf8")).toBe(`${key.line}\n`);
  });

  it("signing keys use Synapse's format: ed25519 a_<4 letters> <unpadded base64 of a 32-byte seed>", () => {
    const keys = Array.from({ length: 20 }, () => generateSigningKey());
    for (const key of keys) {
      expect(key.line).toMatch(/^ed25519 a_[A-Za-z]{4} [A-Za-z0-9+/]{43}$/);
      expect(parseSigningKey(key.line)).toEqual(key);
      expect(Buffer.from(key.publicKey, "base64")).toHaveLength(32);
    }
    expect(new Set(keys.map((k) => k.line.split(" ")[2])).size).toBe(20);
    expect(() => parseSigningKey("ed25519 a_x notbase64")).toThrow(/not a Synapse/);
  });
});

describe("secrets, the signing key and the directories never follow the tenant's links", () => {
  // A compromised Synapse (the server's uid) can put anything in the directories it owns. The agent, as root, must
  // never change or read what a link planted there points to: here "another customer's" root-owned file or directory.
  const ANOTHER_CUSTOMERS = "another customer's secret\n";
  function anotherCustomersFile(): string {
    const file = join(tempDir(), "form-secret");
    writeFileSync(file, ANOTHER_CUSTOMERS, { mode: 0o640 });
    chmodSync(file, 0o640);
    return file;
  }
  const untouched = (path: string) => {
    const st = lstatSync(path);
    return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, content: st.isFile() ? readFileSync(path, "utf8") : readdirSync(path) };
  };
  function provisioned() {
    const paths = homeserverPaths(tempDir(), "srv-1");
    ensureDataDirs(paths, UID);
    ensureSecrets(paths, UID);
    ensureSigningKey(paths, "chat.example.org", UID);
    return paths;
  }
  const UID = 234_567;

  it("a secret, the signing key or a configuration file replaced by a symbolic link: refused, the link's target unchanged", () => {
    const paths = provisioned();
    const cases: Array<[string, () => unknown]> = [
      [join(paths.secrets, SECRET_FILES.formSecret), () => ensureSecrets(paths, UID)],
      [join(paths.secrets, SECRET_FILES.pgpass), () => ensureSecrets(paths, UID)],
      [join(paths.synapse, "chat.example.org.signing.key"), () => ensureSigningKey(paths, "chat.example.org", UID)],
      [join(paths.synapse, "homeserver.yaml"), () => writeOwnedFile(join(paths.synapse, "homeserver.yaml"), "server_name: x\n", UID)],
    ];
    for (const [planted, run] of cases) {
      const target = anotherCustomersFile();
      const before = untouched(target);
      rmSync(planted, { force: true });
      symlinkSync(target, planted);
      expect(run, planted).toThrow(/symbolic link/);
      expect(untouched(target), planted).toEqual(before);
      expect(lstatSync(planted).isSymbolicLink()).toBe(true);
    }
  });

  it("a secret with another hard link, or a FIFO in its place: refused, neither read nor changed", () => {
    const paths = provisioned();
    const other = anotherCustomersFile();
    const before = untouched(other);
    const secret = join(paths.secrets, SECRET_FILES.macaroonSecretKey);
    rmSync(secret);
    linkSync(other, secret);
    expect(() => ensureSecrets(paths, UID)).toThrow(/other hard links/);
    expect(untouched(other)).toEqual(before);

    rmSync(secret);
    execFileSync("mkfifo", [secret]);
    expect(() => ensureSecrets(paths, UID)).toThrow(/not a regular file/);
  });

  it("a server directory replaced by a symbolic link: refused, the directory it points to unchanged", () => {
    const paths = provisioned();
    const elsewhere = tempDir();
    writeFileSync(join(elsewhere, "etc-passwd"), "root:x:0:0::/root:/bin/bash\n");
    const before = untouched(elsewhere);
    rmSync(paths.synapse, { recursive: true });
    symlinkSync(elsewhere, paths.synapse);
    expect(() => ensureDataDirs(paths, UID)).toThrow(/symbolic link/);
    expect(untouched(elsewhere)).toEqual(before);
  });
});

describe("uids", () => {
  it("allocates from the range, stable across instances (restarts), never reused, adopting the owner of data found on disk", () => {
    const stateDir = tempDir();
    const a = new UidAllocator(stateDir, { first: 200_000, last: 200_003 });
    expect(a.allocate("s1")).toBe(200_000);
    expect(a.allocate("s2")).toBe(200_001);
    expect(a.allocate("s1")).toBe(200_000);
    const b = new UidAllocator(stateDir, { first: 200_000, last: 200_003 });
    expect(b.lookup("s2")).toBe(200_001);
    expect(b.allocate("s3", 200_001)).toBe(200_002); // 200001 is s2's: not adopted
    expect(b.allocate("s4", 200_003)).toBe(200_003); // found on disk, free: adopted
    expect(() => b.allocate("s5")).toThrow(/no uid left/);
    const file = JSON.parse(readFileSync(join(stateDir, "homeserver-uids.json"), "utf8"));
    expect(file).toEqual({ version: 1, next: 200_004, servers: { s1: 200_000, s2: 200_001, s3: 200_002, s4: 200_003 } });
    expect(statSync(join(stateDir, "homeserver-uids.json")).mode & 0o777).toBe(0o600);
  });
});

describe("containers", () => {
  const names = homeserverNames("3f2a9c1e-7b4d-4e8f-9a01-23456789abcd");
  const paths = homeserverPaths("/srv/berth", names.serverId);
  const base = { names, paths, serverName: "chat.example.org", uid: 200_123, resources: { memoryMiB: 768, cpus: 0.67 }, maxUploadMiB: 50 };

  it("names derive from the server id; bridge names fit in 15 characters", () => {
    expect(names).toMatchObject({
      shortId: "3f2a9c1e7b4d",
      dbNetwork: "berth-3f2a9c1e7b4d-db",
      hsNetwork: "berth-3f2a9c1e7b4d-hs",
      dbBridge: "bdb3f2a9c1e7b4d",
      hsBridge: "bhs3f2a9c1e7b4d",
      synapse: "berth-3f2a9c1e7b4d-synapse",
      postgres: "berth-3f2a9c1e7b4d-postgres",
      firewallTag: "berth:3f2a9c1e7b4d",
    });
    expect(names.hsBridge.length).toBeLessThanOrEqual(15);
    expect(shortIdOf("not-a-uuid")).toMatch(/^[0-9a-f]{12}$/);
    expect(shortIdOf("not-a-uuid")).toBe(shortIdOf("not-a-uuid"));
  });

  it("upkeep's tool container reaches only its own server's PostgreSQL, hardened, with only the database password, and is never restarted", () => {
    const tool = upkeepContainer({ ...base, image: "berth/upkeep:latest" }, { chunkSize: 500, chunks: 100 });
    expect(tool.name).toBe(`${names.postgres}-upkeep`);
    expect(tool.User).toBe("200123:200123");
    expect(tool.HostConfig).toMatchObject({
      ReadonlyRootfs: true,
      CapDrop: ["ALL"],
      SecurityOpt: ["no-new-privileges"],
      PidsLimit: 200,
      NetworkMode: names.dbNetwork,
      RestartPolicy: { Name: "no" },
    });
    // a bind mount, not a bind string: Docker refuses a missing source rather than creating it
    expect(tool.HostConfig?.Binds).toBeUndefined();
    expect(tool.HostConfig?.Mounts).toEqual([
      { Type: "bind", Source: `${paths.secrets}/postgres-password`, Target: "/run/secrets/postgres-password", ReadOnly: true },
    ]);
    expect(tool.Cmd).toEqual([names.postgres, "synapse", "synapse", "500", "100"]);
    // not counted as the workload's: no workload or role label
    expect(Object.keys(tool.Labels ?? {})).toEqual(["org.berth.upkeep"]);
    expect(JSON.stringify(tool)).not.toMatch(/docker\.sock|PASSWORD=/);
  });

  it("are hardened and limited; a changed spec changes the spec hash", () => {
    const pg = postgresContainer({ ...base, image: "berth/postgres:15" });
    const syn = synapseContainer({ ...base, image: "berth/synapse:latest", healthcheck: { intervalMs: 1000 } });
    for (const spec of [pg, syn]) {
      expect(spec.User).toBe("200123:200123");
      expect(spec.HostConfig).toMatchObject({
        ReadonlyRootfs: true,
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        PidsLimit: 200,
        Memory: 768 * 1024 * 1024,
        MemorySwap: 768 * 1024 * 1024,
        NanoCpus: 670_000_000,
        RestartPolicy: { Name: "unless-stopped" },
        LogConfig: { Type: "json-file", Config: { "max-size": "10m", "max-file": "3" } },
      });
      expect(JSON.stringify(spec)).not.toMatch(/docker\.sock/);
    }
    expect(pg.HostConfig?.NetworkMode).toBe(names.dbNetwork);
    expect(syn.HostConfig?.NetworkMode).toBe(names.hsNetwork);
    expect(pg.Env).toContain("POSTGRES_PASSWORD_FILE=/run/secrets/postgres-password");
    expect(JSON.stringify(pg.Env)).not.toMatch(/POSTGRES_PASSWORD=/);
    expect(syn.Healthcheck).toEqual({ Interval: 1e9 });
    expect(pg.Healthcheck).toMatchObject({
      Test: ["CMD", "pg_isready", "--host=127.0.0.1", "--port=5432", "--username=synapse", "--dbname=synapse", "--quiet", "--timeout=5"],
      Interval: 10e9,
    });
    expect(syn.Labels).toMatchObject({ "berth.workload": names.serverId, "berth.kind": "homeserver", "berth.role": "synapse" });
    expect(syn.HostConfig?.Mounts).toEqual([
      { Type: "bind", Source: paths.synapse, Target: "/data", ReadOnly: false },
      { Type: "bind", Source: paths.synapseModules, Target: "/usr/local/lib/berth-synapse-modules", ReadOnly: true },
    ]);
    expect(pg.HostConfig?.Mounts?.[0]).toEqual({ Type: "bind", Source: paths.postgres, Target: "/var/lib/postgresql/data", ReadOnly: false });
    expect(syn.HostConfig?.Binds).toBeUndefined();
    expect(syn.Env).toEqual([
      "PYTHONPATH=/usr/local/lib/berth-synapse-modules",
      "MALLOC_CONF=narenas:1,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0",
    ]);
    const other = synapseContainer({ ...base, image: "berth/synapse:1.0" });
    expect(other.Labels?.["berth.spec-hash"]).not.toBe(syn.Labels?.["berth.spec-hash"]);
    // Uploads are spooled to /tmp: twice the upload size, at least the 100m every server had before settings.
    expect(syn.HostConfig?.Tmpfs?.["/tmp"]).toBe("rw,nosuid,nodev,noexec,size=100m");
    const bigUploads = synapseContainer({ ...base, image: "berth/synapse:latest", healthcheck: { intervalMs: 1000 }, maxUploadMiB: 250 });
    expect(bigUploads.HostConfig?.Tmpfs?.["/tmp"]).toBe("rw,nosuid,nodev,noexec,size=500m");
    expect(bigUploads.Labels?.["berth.spec-hash"]).not.toBe(syn.Labels?.["berth.spec-hash"]);
    expect(() =>
      assertNoDockerSocket({
        Name: "/x",
        Mounts: [{ Type: "bind", Source: "/var/run/docker.sock", Destination: "/s", Mode: "", RW: true, Propagation: "" }],
      } as never),
    ).toThrow(/socket/);
  });
});

describe("local federation (development only)", () => {
  const names = homeserverNames("3f2a9c1e-7b4d-4e8f-9a01-23456789abcd");
  const paths = homeserverPaths("/srv/berth", names.serverId);
  const base = {
    names,
    paths,
    serverName: "chat.example.org",
    uid: 200_123,
    resources: { memoryMiB: 768, cpus: 0.67 },
    image: "berth/synapse:latest",
    maxUploadMiB: 50,
  };

  it("Synapse's /etc/hosts is the agent's file, read-only; without it Docker's own", () => {
    const local = synapseContainer({ ...base, hostsFile: "/etc/berth-agent/state/local-federation/x.hosts" });
    const hosts = { Type: "bind", Source: "/etc/berth-agent/state/local-federation/x.hosts", Target: "/etc/hosts", ReadOnly: true };
    expect(local.HostConfig?.Mounts).toContainEqual(hosts);
    expect(synapseContainer(base).HostConfig?.Mounts).not.toContainEqual(hosts);
    expect(postgresContainer({ ...base, hostsFile: "/x.hosts" }).HostConfig?.Mounts?.map((m) => m.Target)).not.toContain("/etc/hosts");
  });

  it("the hosts file resolves every homeserver of the host to the given address, and loopback to itself", () => {
    const text = hostsFileContent("172.18.0.1", ["b.berth.localhost", "a.berth.localhost", "b.berth.localhost"]);
    expect(text.split("\n").filter((line) => line && !line.startsWith("#"))).toEqual([
      "127.0.0.1\tlocalhost",
      "::1\tlocalhost",
      "172.18.0.1\ta.berth.localhost",
      "172.18.0.1\tb.berth.localhost",
    ]);
  });

  it("the proxy's stand-in domains are resolved like the homeservers' names", () => {
    const proxy = parseProxyConfig({
      tls: "internal",
      storageDir: "/var/lib/berth/caddy",
      standInDomains: { "acme.test": { host: "127.0.0.1", port: 20_001 } },
    });
    expect(localFederationOptions({ proxy }).standInDomains).toEqual(["acme.test"]);
  });

  it("the flag needs the proxy on its internal CA with a storage directory: never a host on ACME (production)", () => {
    expect(localFederationOptions({ proxy: parseProxyConfig({ tls: "internal", storageDir: "/var/lib/berth/caddy" }) })).toEqual({
      caRootFile: "/var/lib/berth/caddy/pki/authorities/local/root.crt",
      standInDomains: [],
    });
    for (const proxy of [
      undefined,
      parseProxyConfig({ tls: "internal" }),
      parseProxyConfig({ tls: "acme", acmeEmail: "ops@example.org", storageDir: "/var/lib/caddy" }),
    ]) {
      expect(() => localFederationOptions({ proxy })).toThrow(ConfigError);
    }
  });
});

describe("firewall rules", () => {
  it("drop private ranges, other bridges and the host; allow own networks, answers, DNS to a private resolver, the proxy's public ports", () => {
    const rules = firewallRules(
      {
        chainId: "abc123def456",
        tag: "berth:abc123def456",
        hsBridge: "bhsabc123def456",
        dbBridge: "bdbabc123def456",
        dockerSubnets: ["11.0.0.0/16", "172.18.0.0/16"],
      },
      { nameservers: resolvConfNameservers("nameserver 10.0.0.53\nnameserver 127.0.0.53\nnameserver 1.1.1.1\n"), hostTcpPorts: [443] },
    );
    const text = (list: string[][]) => list.map((r) => r.join(" "));
    const forward = text(rules.forward);
    expect(rules.forward.every((r) => r.join(" ").includes("--comment berth:abc123def456"))).toBe(true);
    expect(forward[0]).toMatch(/^-i bdbabc123def456 -o bdbabc123def456 .* -j RETURN$/);
    expect(forward).toContainEqual(expect.stringMatching(/^-i bdbabc123def456 -m comment .* -j DROP$/));
    expect(forward).toContainEqual(expect.stringMatching(/^-o bhsabc123def456 -m comment .* -j DROP$/));
    expect(forward).toContainEqual(expect.stringMatching(/^-i bhsabc123def456 -d 10\.0\.0\.53\/32 -p udp --dport 53 .* -j RETURN$/));
    expect(forward.join("\n")).not.toMatch(/1\.1\.1\.1|127\.0\.0\.53/);
    for (const range of ["10.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10", "11.0.0.0/16", "224.0.0.0/4"]) {
      expect(forward).toContainEqual(expect.stringMatching(new RegExp(`^-i bhsabc123def456 -d ${range.replaceAll(".", "\\.")} .* -j DROP$`)));
    }
    expect(forward.filter((r) => r.includes("172.18.0.0/16"))).toEqual([]); // inside 172.16/12 already
    for (const other of ["bhs+", "bdb+", "docker0", "br-+"]) expect(forward).toContainEqual(expect.stringContaining(`-o ${other} `));
    // the DNS exception comes before the private-range drops
    expect(forward.findIndex((r) => r.includes("--dport 53"))).toBeLessThan(forward.findIndex((r) => r.includes("-d 10.0.0.0/8")));
    expect(text(rules.input)).toEqual([
      "-m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment berth:abc123def456 -j RETURN",
      "-i bhsabc123def456 -p tcp -m multiport --dports 443 -m addrtype --dst-type LOCAL -m comment --comment berth:abc123def456 -j RETURN",
      "-m comment --comment berth:abc123def456 -j DROP",
    ]);
    expect(rules.jumps.map(([chain, r]) => `${chain} ${r.join(" ")}`)).toEqual([
      "DOCKER-USER -i bhsabc123def456 -m comment --comment berth:abc123def456 -j BERTH-F-abc123def456",
      "DOCKER-USER -o bhsabc123def456 -m comment --comment berth:abc123def456 -j BERTH-F-abc123def456",
      "DOCKER-USER -i bdbabc123def456 -m comment --comment berth:abc123def456 -j BERTH-F-abc123def456",
      "DOCKER-USER -o bdbabc123def456 -m comment --comment berth:abc123def456 -j BERTH-F-abc123def456",
      "INPUT -i bhsabc123def456 -m comment --comment berth:abc123def456 -j BERTH-I-abc123def456",
      "INPUT -i bdbabc123def456 -m comment --comment berth:abc123def456 -j BERTH-I-abc123def456",
    ]);
    expect(() => firewallRules({ chainId: "x; rm", tag: "t", hsBridge: "a", dbBridge: "b" })).toThrow(/invalid chain id/);
    expect(splitRule('-i x -m comment --comment "berth:a b" -j DROP')).toEqual(["-i", "x", "-m", "comment", "--comment", "berth:a b", "-j", "DROP"]);
  });
});

describe("inventory states", () => {
  const c = (role: string, State: string, Status = "") => ({ State, Status, Labels: { "berth.role": role } });
  it("running, stopped or failed from both containers' state and health", () => {
    expect(homeserverState([c("synapse", "running", "Up 1 minute (healthy)"), c("postgres", "running", "Up 1 minute (healthy)")])).toBe("running");
    expect(homeserverState([c("synapse", "running", "Up 3 seconds (health: starting)"), c("postgres", "running", "Up")])).toBe("running");
    expect(homeserverState([c("synapse", "exited", "Exited (0)"), c("postgres", "exited", "Exited (0)")])).toBe("stopped");
    expect(homeserverState([c("synapse", "running", "Up 5 minutes (unhealthy)"), c("postgres", "running", "Up")])).toBe("failed");
    expect(homeserverState([c("synapse", "restarting", "Restarting (1)"), c("postgres", "running", "Up")])).toBe("failed");
    expect(homeserverState([c("synapse", "running", "Up"), c("postgres", "exited", "Exited (1)")])).toBe("failed");
    expect(homeserverState([c("postgres", "running", "Up")])).toBe("failed");
  });
});
