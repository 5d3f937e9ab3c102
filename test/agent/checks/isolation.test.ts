// The isolation check on the real Docker Engine with the agent's iptables rules: two homeservers side
// by side. It holds for a normally provisioned one (and its probe reaches none of the other's
// containers nor the host's private services, though it does reach its own Synapse); it fails naming
// the capability once a container is recreated with an extra one.
import { createServer, type Server } from "node:net";
import type Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkIsolation, containerDeviations, probeFromNetwork, type IsolationCheckInput } from "../../../agent/checks/isolation.ts";
import { homeserverNames } from "../../../agent/homeserver/names.ts";
import { SYNAPSE_IMAGE, TestRun, dockerUsable, ensureImages } from "../homeserver/helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`isolation check tests skipped: ${unusable}`);

describe.skipIf(unusable)("the isolation check (real Docker Engine and iptables)", { timeout: 180_000 }, () => {
  let run: TestRun;
  let a: ReturnType<TestRun["spec"]>;
  let b: ReturnType<TestRun["spec"]>;
  let hostService: { server: Server; port: number; connections: number };

  const input = (spec: { serverId: string }, other: { serverId: string }): IsolationCheckInput => ({
    runtime: run.runtime,
    names: run.names(spec.serverId),
    probeImage: SYNAPSE_IMAGE,
    neighbours: [run.names(other.serverId)],
    hostPorts: [
      { what: "the Caddy admin API", port: 2019 },
      { what: "a private service listening on all addresses", port: hostService.port },
    ],
    labels: run.labels,
  });

  beforeAll(async () => {
    await ensureImages();
    run = new TestRun();
    a = run.spec("alpha");
    b = run.spec("bravo");
    await Promise.all([run.run("homeserver.provision", a), run.run("homeserver.provision", b)]);
    const server = createServer((socket) => {
      hostService.connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, "0.0.0.0", resolve));
    hostService = { server, port: (server.address() as { port: number }).port, connections: 0 };
  }, 600_000);

  afterAll(async () => {
    hostService?.server.close();
    await run?.cleanup();
  }, 180_000);

  it("holds for a normally provisioned homeserver: as contracted, and its network reaches neither the other homeserver nor the host", async () => {
    const outcome = await checkIsolation(input(a, b));
    expect(outcome.result, outcome.evidence.summary).toBe("holds");
    const facts = Object.fromEntries(outcome.evidence.facts.map((f) => [f.label, f.value]));
    expect(facts["Synapse container"]).toMatch(/^as contracted: user \d+:\d+/);
    expect(facts["PostgreSQL container"]).toMatch(/^as contracted/);
    const nb = run.names(b.serverId);
    const bSynapse = (await run.runtime.inspectContainer(nb.synapse))!.NetworkSettings.Networks[nb.hsNetwork]!.IPAddress;
    const bPostgres = (await run.runtime.inspectContainer(nb.postgres))!.NetworkSettings.Networks[nb.dbNetwork]!.IPAddress;
    expect(facts["Probe: other homeservers"]).toContain(`${bSynapse}:8008 no (`);
    expect(facts["Probe: other homeservers"]).toContain(`${bPostgres}:5432 no (`);
    const hsGateway = (await run.runtime.inspectNetwork(run.names(a.serverId).hsNetwork))!.gateways[0]!;
    expect(facts["Probe: host's private services"]).toContain(`${hsGateway}:2019 no (`);
    expect(facts["Probe: host's private services"]).toContain(`${hsGateway}:${hostService.port} no (`);
    expect(facts["Probe: host's private services"]).not.toContain("CONNECTED");
    expect(hostService.connections).toBe(0);
    // no probe container is left behind
    expect(await run.runtime.inspectContainer(`${run.names(a.serverId).synapse}-probe`)).toBeUndefined();
  });

  it("the probe does connect where its network allows: its own Synapse", async () => {
    const na = run.names(a.serverId);
    const synapse = (await run.runtime.inspectContainer(na.synapse))!;
    const ip = synapse.NetworkSettings.Networks[na.hsNetwork]!.IPAddress;
    expect(await probeFromNetwork(input(a, b), synapse.Config.User, [{ what: "its own Synapse", host: ip, port: 8008 }])).toEqual(["connected"]);
  });

  it("fails naming the capability when a container was started with an extra one", async () => {
    const nb = run.names(b.serverId);
    const original = (await run.runtime.inspectContainer(nb.synapse))!;
    await run.runtime.removeContainer(nb.synapse, { force: true });
    await run.runtime.createContainer({
      name: nb.synapse,
      Image: original.Config.Image,
      User: original.Config.User,
      Env: original.Config.Env,
      Labels: original.Config.Labels,
      HostConfig: { ...original.HostConfig, CapAdd: ["NET_ADMIN"] },
    });
    await run.runtime.connectNetwork(nb.dbNetwork, nb.synapse);
    await run.runtime.startContainer(nb.synapse);

    const outcome = await checkIsolation(input(b, a));
    expect(outcome.result).toBe("fails");
    expect(outcome.evidence.summary).toContain("the synapse container has the NET_ADMIN capability");
    expect(outcome.evidence.facts.find((f) => f.label === "Synapse container")?.value).toBe("the synapse container has the NET_ADMIN capability");
    expect(outcome.evidence.facts.find((f) => f.label === "PostgreSQL container")?.value).toMatch(/^as contracted/);
    // the probe from B's network still reaches nothing of A's
    expect(outcome.evidence.facts.find((f) => f.label === "Probe: other homeservers")?.value).not.toContain("CONNECTED");
  });
});

describe("containerDeviations: each departure from the contract, named", () => {
  const names = homeserverNames("t-deviations");
  const contracted = {
    Config: { User: "20001:20001" },
    HostConfig: {
      Privileged: false,
      CapDrop: ["ALL"],
      CapAdd: null,
      SecurityOpt: ["no-new-privileges"],
      ReadonlyRootfs: true,
      Memory: 512 * 1024 * 1024,
      NanoCpus: 500_000_000,
      PidsLimit: 200,
      NetworkMode: names.hsNetwork,
      PidMode: "",
      IpcMode: "private",
    },
    NetworkSettings: { Networks: { [names.hsNetwork]: {}, [names.dbNetwork]: {} } },
    Mounts: [],
  };
  const inspected = (changes: { Config?: object; HostConfig?: object; NetworkSettings?: object }) =>
    ({
      ...contracted,
      ...changes,
      Config: { ...contracted.Config, ...changes.Config },
      HostConfig: { ...contracted.HostConfig, ...changes.HostConfig },
    }) as unknown as Docker.ContainerInspectInfo;

  it("finds none in what containers.ts creates", () => {
    expect(containerDeviations("synapse", inspected({}), names)).toEqual([]);
  });

  it("names root, privilege, capabilities, missing limits, the host's namespaces and foreign networks", () => {
    const found = containerDeviations(
      "synapse",
      inspected({
        Config: { User: "" },
        HostConfig: {
          Privileged: true,
          CapDrop: [],
          CapAdd: ["CAP_SYS_ADMIN"],
          SecurityOpt: [],
          ReadonlyRootfs: false,
          Memory: 0,
          NanoCpus: 0,
          PidsLimit: 0,
          NetworkMode: "host",
          PidMode: "host",
          IpcMode: "host",
        },
        NetworkSettings: { Networks: { host: {} } },
      }),
      names,
    );
    expect(found).toEqual([
      "the synapse container runs as root",
      "the synapse container is privileged",
      "the synapse container has the SYS_ADMIN capability",
      "the synapse container does not drop all capabilities",
      "the synapse container may gain new privileges (no-new-privileges is not set)",
      "the synapse container has a writable root filesystem",
      "the synapse container has no memory limit",
      "the synapse container has no CPU limit",
      "the synapse container has no process limit",
      "the synapse container shares the host's network",
      "the synapse container shares the host's processes",
      "the synapse container shares the host's IPC",
      "the synapse container is on the network host, not one of its own",
    ]);
  });

  it("PostgreSQL belongs on the database network only, and never has the Docker socket", () => {
    const found = containerDeviations(
      "postgres",
      inspected({ Mounts: [{ Source: "/var/run/docker.sock", Destination: "/var/run/docker.sock" }] } as object),
      names,
    );
    expect(found).toEqual([
      `the postgres container is on the network ${names.hsNetwork}, not one of its own`,
      "the postgres container has the container runtime's socket mounted",
    ]);
  });
});
