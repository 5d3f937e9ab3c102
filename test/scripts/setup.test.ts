// scripts/setup.mjs: what `npm run dev` and .ci/run do to a machine before homeservers can run
// on it. The decisions are specified against described machines (a probe object); the real script
// is run only in its reporting mode (--check), which changes nothing.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it, onTestFinished } from "vitest";
import { DOCKERD_ADDRESS_POOL, dockerdArgs, IMAGES, PEBBLE_VERSION, planSetup, reportLines, runSetup, type SetupProbe } from "../../scripts/setup.mjs";

const SETUP_SCRIPT = fileURLToPath(new URL("../../scripts/setup.mjs", import.meta.url));
const DEBIAN = { id: "debian", idLike: [], name: "Debian GNU/Linux 12 (bookworm)" };
const UBUNTU = { id: "ubuntu", idLike: ["debian"], name: "Ubuntu 24.04.1 LTS" };
const FEDORA = { id: "fedora", idLike: [], name: "Fedora Linux 40 (Workstation Edition)" };
const EVERY_COMMAND = ["apt-get", "dockerd", "docker", "caddy", "iptables", "debootstrap", "age", "zstd", "chromium", "go"];
const ALL_HOST_PACKAGES = ["docker.io", "iptables", "caddy", "debootstrap", "age", "zstd"];

interface Machine {
  root: boolean;
  os: ReturnType<SetupProbe["osRelease"]>;
  commands: string[];
  docker: ReturnType<SetupProbe["docker"]>;
  images: boolean;
  pebble: boolean;
  daemonConfig: Record<string, unknown> | null;
}

/** A probe answering for a described machine; it fails the test if asked about the images while Docker does not answer. */
function probeOf(machine: Partial<Machine>): SetupProbe {
  const { root = true, os = DEBIAN, commands = EVERY_COMMAND, docker = "answers", images = true, pebble = true, daemonConfig = null } = machine;
  return {
    isRoot: () => root,
    osRelease: () => os,
    hasCommand: (name) => commands.includes(name),
    docker: () => docker,
    imagesPresent: () => {
      if (docker !== "answers") throw new Error("asked about images while Docker does not answer");
      return images;
    },
    pebbleBuilt: () => pebble,
    daemonConfig: () => daemonConfig,
  };
}

const without = (...absent: string[]) => EVERY_COMMAND.filter((command) => !absent.includes(command));

describe("as root on Debian or Ubuntu: it does the set-up itself", () => {
  it("on a machine that has everything, misses nothing and only lets build.sh keep the images current", () => {
    const plan = planSetup(probeOf({}));
    expect(plan).toMatchObject({ missing: [], install: [], steps: ["build-images"], blockers: [] });
  });

  it("on a fresh machine installs every package, starts dockerd and builds the images", () => {
    const plan = planSetup(probeOf({ commands: ["apt-get"], docker: "down" }));
    expect(plan.install).toEqual(ALL_HOST_PACKAGES);
    expect(plan.steps).toEqual(["install", "start-dockerd", "build-images"]);
    expect(plan.blockers).toEqual([]);
    expect(plan.missing).toEqual([
      "Docker Engine (dockerd, docker)",
      "iptables (iptables)",
      "Caddy (caddy)",
      "debootstrap (debootstrap)",
      "age (age)",
      "zstd (zstd)",
      "a running Docker Engine (docker info does not answer)",
    ]);
  });

  it("installs only what is missing", () => {
    const plan = planSetup(probeOf({ commands: without("caddy", "zstd") }));
    expect(plan.install).toEqual(["caddy", "zstd"]);
    expect(plan.steps).toEqual(["install", "build-images"]);
  });

  it("installs Docker Engine when either of its commands is missing", () => {
    expect(planSetup(probeOf({ commands: without("dockerd"), docker: "down" })).install).toEqual(["docker.io"]);
    expect(planSetup(probeOf({ commands: without("docker"), docker: "down" })).install).toEqual(["docker.io"]);
  });

  it("leaves Chromium to the tests' set-up", () => {
    const fresh = probeOf({ commands: ["apt-get"], docker: "down" });
    expect(planSetup(fresh).install).not.toContain("chromium");
    expect(planSetup(fresh, { forTests: true }).install).toEqual([...ALL_HOST_PACKAGES, "chromium", "fonts-dejavu-core"]);
    expect(planSetup(probeOf({ commands: without("chromium") }), { forTests: true }).install).toEqual(["chromium", "fonts-dejavu-core"]);
  });

  it("starts dockerd when Docker Engine is installed but does not answer, and installs nothing", () => {
    const plan = planSetup(probeOf({ docker: "down" }));
    expect(plan).toMatchObject({ install: [], steps: ["start-dockerd", "build-images"], blockers: [] });
  });

  it("starts dockerd with address pools of /24s (4,096 networks, two per homeserver), unless daemon.json sets its own", () => {
    expect(planSetup(probeOf({ docker: "down" })).commands).toContain(
      `dockerd --default-address-pool ${DOCKERD_ADDRESS_POOL} >>/var/log/berth-dockerd.log 2>&1 &`,
    );
    expect(DOCKERD_ADDRESS_POOL).toBe("base=172.16.0.0/12,size=24");
    const own = { "default-address-pools": [{ base: "10.200.0.0/16", size: 24 }] };
    expect(planSetup(probeOf({ docker: "down", daemonConfig: own })).commands).toContain("dockerd >>/var/log/berth-dockerd.log 2>&1 &");
    expect(dockerdArgs({ "log-level": "warn" })).toEqual(["--default-address-pool", DOCKERD_ADDRESS_POOL]);
  });

  it("builds the images when they are absent", () => {
    const plan = planSetup(probeOf({ images: false }));
    expect(plan.missing).toEqual([`the images ${IMAGES.join(", ")}`]);
    expect(plan.steps).toEqual(["build-images"]);
  });

  it("takes Ubuntu, whose os-release says it is like Debian", () => {
    expect(planSetup(probeOf({ os: UBUNTU, commands: without("caddy") })).blockers).toEqual([]);
  });

  it("needs no package manager when there is nothing to install, even elsewhere than Debian", () => {
    const plan = planSetup(probeOf({ os: FEDORA, commands: without("apt-get"), docker: "down" }));
    expect(plan).toMatchObject({ steps: ["start-dockerd", "build-images"], blockers: [] });
  });
});

describe("when it cannot: it says what is missing and what to run, and changes nothing", () => {
  it("not root on Debian: the commands, with sudo, and the one command that does it all", () => {
    const plan = planSetup(probeOf({ root: false, commands: without("caddy"), docker: "down" }));
    expect(plan.blockers).toEqual(["not running as root"]);
    expect(plan.missing).toEqual(["Caddy (caddy)", "a running Docker Engine (docker info does not answer)"]);
    expect(plan.commands).toEqual([
      "sudo apt-get update && sudo apt-get install -y --no-install-recommends caddy",
      "sudo sh -c 'dockerd --default-address-pool base=172.16.0.0/12,size=24 >>/var/log/berth-dockerd.log 2>&1 &'",
      "sudo bash images/build.sh",
    ]);
    expect(reportLines(plan)).toEqual([
      "missing: Caddy (caddy); a running Docker Engine (docker info does not answer)",
      "cannot set this machine up here: not running as root; run:",
      "  sudo apt-get update && sudo apt-get install -y --no-install-recommends caddy",
      "  sudo sh -c 'dockerd --default-address-pool base=172.16.0.0/12,size=24 >>/var/log/berth-dockerd.log 2>&1 &'",
      "  sudo bash images/build.sh",
      "(or run `sudo node scripts/setup.mjs`, which does all of it)",
    ]);
  });

  it("not root with absent images: sudo bash images/build.sh", () => {
    const plan = planSetup(probeOf({ root: false, images: false }));
    expect(plan).toMatchObject({ blockers: ["not running as root"], commands: ["sudo bash images/build.sh"] });
  });

  it("not root, and Docker Engine refuses this user: the docker group", () => {
    const plan = planSetup(probeOf({ root: false, docker: "denied" }));
    expect(plan.missing).toEqual(["permission to use Docker Engine (docker info: permission denied)"]);
    expect(plan.blockers).toEqual(["not running as root"]);
    expect(plan.commands).toEqual(['sudo usermod -aG docker "$USER"   (then log in again)', "sudo bash images/build.sh"]);
    // Running this script as root would not let this user in.
    expect(plan.rootCommand).toBeNull();
  });

  it("for the tests, builds Pebble (the ACME test server) with Go when it is not built yet, as any user", () => {
    expect(planSetup(probeOf({ pebble: false })).steps).not.toContain("build-pebble");
    const plan = planSetup(probeOf({ root: false, pebble: false }), { forTests: true });
    expect(plan).toMatchObject({ steps: ["build-pebble"], blockers: [] });
    expect(plan.missing).toEqual([`Pebble ${PEBBLE_VERSION} (the ACME server the certificate tests run; built with Go, as any user)`]);
    expect(planSetup(probeOf({ root: false }), { forTests: true }).steps).toEqual([]);
  });

  it("for the tests without Go: says to install it", () => {
    const plan = planSetup(probeOf({ root: false, pebble: false, commands: without("go") }), { forTests: true });
    expect(plan.blockers).toEqual(["no Go toolchain (go on the PATH or in /usr/local/go/bin)"]);
    expect(plan.commands).toEqual(["install Go (https://go.dev/dl/), then run node scripts/setup.mjs --for-tests again"]);
  });

  it("not root on a machine that has everything: ready, with nothing to do", () => {
    const plan = planSetup(probeOf({ root: false }));
    expect(plan).toMatchObject({ missing: [], steps: [], blockers: [] });
    expect(reportLines(plan)).toEqual(["nothing missing"]);
  });

  it("not Debian or Ubuntu: names what to install with the system's own package manager", () => {
    const plan = planSetup(probeOf({ os: FEDORA, commands: without("apt-get", "caddy", "age") }));
    expect(plan.blockers).toEqual(["not Debian or Ubuntu (Fedora Linux 40 (Workstation Edition))"]);
    expect(plan.commands).toEqual(["install Caddy, age with this system's package manager", "bash images/build.sh"]);
    expect(plan.rootCommand).toBeNull();
  });

  it("no /etc/os-release: not known to be Debian", () => {
    const plan = planSetup(probeOf({ os: null, commands: without("caddy") }));
    expect(plan.blockers).toEqual(["not Debian or Ubuntu (an unknown system (no /etc/os-release))"]);
  });

  it("Debian without apt-get", () => {
    const plan = planSetup(probeOf({ commands: without("apt-get", "caddy") }));
    expect(plan.blockers).toEqual(["no apt-get"]);
    expect(plan.commands[0]).toBe("install Caddy with this system's package manager");
  });

  it("every reason at once, each named once", () => {
    const plan = planSetup(probeOf({ root: false, os: FEDORA, commands: [], docker: "down" }));
    expect(plan.blockers).toEqual(["not running as root", "not Debian or Ubuntu (Fedora Linux 40 (Workstation Edition))"]);
  });

  it("a run on such a machine reports and does nothing", async () => {
    const lines: string[] = [];
    const result = await runSetup({ probe: probeOf({ root: false, commands: without("caddy") }), log: (line) => lines.push(line) });
    expect(result).toEqual({ ready: false, did: [] });
    expect(lines).toEqual([
      "checking this machine (Debian GNU/Linux 12 (bookworm), not root) for what homeservers need",
      "missing: Caddy (caddy)",
      "cannot set this machine up here: not running as root; run:",
      "  sudo apt-get update && sudo apt-get install -y --no-install-recommends caddy",
      "(or run `sudo node scripts/setup.mjs`, which does all of it)",
    ]);
  });

  it("--check reports what a run would fix, and does nothing", async () => {
    const lines: string[] = [];
    const result = await runSetup({ check: true, probe: probeOf({ commands: without("zstd"), docker: "down" }), log: (line) => lines.push(line) });
    expect(result).toEqual({ ready: false, did: [] });
    expect(lines.slice(1)).toEqual([
      "missing: zstd (zstd); a running Docker Engine (docker info does not answer)",
      "to set it up, run as root: node scripts/setup.mjs (or npm run dev)",
    ]);
  });
});

/** Runs the real script; its exit code and everything it printed. */
function runScript(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SETUP_SCRIPT, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, output }));
  });
}

describe("node scripts/setup.mjs", () => {
  it("--check on this machine (set up as .ci/run sets it up) reports nothing missing and exits 0", async () => {
    const { code, output } = await runScript(["--check", "--for-tests"]);
    expect(output).toContain("nothing missing");
    expect(output).not.toContain("missing:");
    expect(code, output).toBe(0);
  });

  it("--check with no commands on the PATH reports them missing and exits 1", async () => {
    const emptyDir = mkdtempSync(join(tmpdir(), "berth-setup-path-"));
    onTestFinished(() => rmSync(emptyDir, { recursive: true }));
    const { code, output } = await runScript(["--check"], { ...process.env, PATH: emptyDir });
    expect(output).toContain("Caddy (caddy)");
    expect(output).toContain("a running Docker Engine (docker info does not answer)");
    expect(code, output).toBe(1);
  });

  it("imports node: built-ins only (.ci/run runs it on the machine's Node, before npm ci)", () => {
    const source = readFileSync(SETUP_SCRIPT, "utf8");
    const specifiers = [...source.matchAll(/^import .* from "([^"]+)";$/gm)].map((match) => match[1]);
    expect(specifiers.length).toBeGreaterThan(0);
    expect(specifiers.filter((specifier) => !specifier!.startsWith("node:"))).toEqual([]);
    expect(source).not.toMatch(/\bimport\(|\brequire\(/);
  });
});
