#!/usr/bin/env node
// Sets this machine up to run homeservers: installs what is missing (Docker Engine, Caddy,
// iptables, debootstrap, age, zstd; with --for-tests also Chromium for the browser tests), starts
// dockerd if no Docker Engine answers, and builds the images (`bash images/build.sh`, seconds when
// they are current). `npm run dev` runs it before starting its local agent; `.ci/run` runs it with
// --for-tests, which also builds Pebble, Let's Encrypt's ACME test server, with Go (once per
// version: it is kept outside the checkout, see pebbleDir()).
//
//   node scripts/setup.mjs [--for-tests] [--check]
//
// It does the work only as root on Debian or Ubuntu (apt-get); anywhere else it says what is
// missing and the commands that would fix it, and changes nothing. --check only reports. Exits 0
// when the machine is ready, 1 when something is still missing.
//
// Plain Node ≥ 20 with node: built-ins only: `.ci/run` runs it on the machine's own Node, before
// `npm ci` has installed anything.
import { spawn, spawnSync } from "node:child_process";
import { accessSync, closeSync, constants, cpSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** What a host running homeservers needs, by the commands that show it is there (Debian's packages). */
export const HOST_NEEDS = [
  // The homeservers' containers, their networks and firewall rules.
  { name: "Docker Engine", commands: ["dockerd", "docker"], packages: ["docker.io"] },
  { name: "iptables", commands: ["iptables"], packages: ["iptables"] },
  // The agent's HTTPS proxy, with automatic certificates.
  { name: "Caddy", commands: ["caddy"], packages: ["caddy"] },
  // images/build.sh builds the images from Debian (no registry needs to be reachable).
  { name: "debootstrap", commands: ["debootstrap"], packages: ["debootstrap"] },
  // The standard tools a backup must open with (the tests and benchmarks use them).
  { name: "age", commands: ["age"], packages: ["age"] },
  { name: "zstd", commands: ["zstd"], packages: ["zstd"] },
];
/** What the browser tests need on top (Playwright drives Debian's Chromium; no browser downloads). */
export const TEST_NEEDS = [{ name: "Chromium", commands: ["chromium"], packages: ["chromium", "fonts-dejavu-core"] }];
/** The images `npm run dev` runs homeservers from, and the tool image their daily upkeep runs (all of images/build.sh's). */
export const IMAGES = ["berth/synapse:latest", "berth/postgres:15", "berth/upkeep:latest"];
export const DOCKERD_LOG = "/var/log/berth-dockerd.log";
/**
 * Every homeserver has two networks of its own. Docker's default pools hand out /16s and /20s,
 * 31 networks in all (15 homeservers); the same private range cut into /24s gives 4,096.
 */
export const DOCKERD_ADDRESS_POOL = "base=172.16.0.0/12,size=24";
const DAEMON_JSON = "/etc/docker/daemon.json";

/** dockerd's arguments: our address pool, unless daemon.json (which a flag may not repeat) sets its own. */
export function dockerdArgs(daemonConfig) {
  return daemonConfig?.["default-address-pools"] ? [] : ["--default-address-pool", DOCKERD_ADDRESS_POOL];
}
/** Pebble (the ACME server) and pebble-challtestsrv (the DNS it validates against), pinned: the certificate tests run them. */
export const PEBBLE_MODULE = "github.com/letsencrypt/pebble/v2";
export const PEBBLE_VERSION = "v2.10.3";
/** Where Go is when it is not on the PATH (the official tarball's place). */
const GO_FALLBACK_DIR = "/usr/local/go/bin";

/**
 * The built Pebble of PEBBLE_VERSION: under the user's cache directory, not the checkout, so every
 * fresh clone on this machine reuses it. The directory appears only complete (built aside, then renamed).
 */
export function pebbleDir(env = process.env) {
  return join(env.XDG_CACHE_HOME || join(env.HOME || homedir(), ".cache"), "berth", `pebble-${PEBBLE_VERSION}`);
}

/** The files in pebbleDir(): the two programs, and Pebble's own test certificates (its HTTPS, and the root that signs it). */
export function pebbleFiles(dir = pebbleDir()) {
  return {
    pebble: join(dir, "bin", "pebble"),
    challtestsrv: join(dir, "bin", "pebble-challtestsrv"),
    /** The root (minica) that signed Pebble's HTTPS certificate: what an ACME client must trust to reach Pebble. */
    minicaRoot: join(dir, "certs", "pebble.minica.pem"),
    httpsCertificate: join(dir, "certs", "localhost", "cert.pem"),
    httpsKey: join(dir, "certs", "localhost", "key.pem"),
  };
}

/**
 * What this machine lacks and what the set-up would do about it, from a probe of the machine:
 *
 *   probe.isRoot(): boolean
 *   probe.osRelease(): { id, idLike: string[], name } from /etc/os-release, or null
 *   probe.hasCommand(name): boolean
 *   probe.docker(): "answers" | "denied" (no permission) | "down"
 *   probe.imagesPresent(): boolean (asked only when Docker answers)
 *
 * Returns { os, root, install, missing, steps, blockers, commands, rootCommand }: `steps` are what
 * a run does, in order ("install" the `install` packages, "start-dockerd", "build-images");
 * `blockers` say why it cannot do them itself, `commands` what to run by hand instead, and
 * `rootCommand` the one command that does them all when only root is lacking. As root,
 * "build-images" is always a step: build.sh alone knows whether the images are current, and says
 * so in seconds.
 */
export function planSetup(probe, { forTests = false } = {}) {
  const root = probe.isRoot();
  const release = probe.osRelease();
  const os = release?.name ?? "an unknown system (no /etc/os-release)";
  const debianLike = release !== null && [release.id, ...release.idLike].some((id) => id === "debian" || id === "ubuntu");
  const apt = probe.hasCommand("apt-get");
  const sudo = root ? "" : "sudo ";
  const needs = forTests ? [...HOST_NEEDS, ...TEST_NEEDS] : HOST_NEEDS;
  const pebbleMissing = forTests && !probe.pebbleBuilt();
  const absent = needs.filter((need) => !need.commands.every((command) => probe.hasCommand(command)));
  const docker = probe.docker();
  const imagesPresent = docker === "answers" ? probe.imagesPresent() : null;

  const plan = { os, root, install: absent.flatMap((need) => need.packages), missing: [], steps: [], blockers: [], commands: [], rootCommand: null };
  const block = (reason) => {
    if (!plan.blockers.includes(reason)) plan.blockers.push(reason);
  };

  plan.missing.push(...absent.map((need) => `${need.name} (${need.commands.join(", ")})`));
  if (absent.length > 0) {
    plan.steps.push("install");
    if (!root) block("not running as root");
    if (!debianLike) block(`not Debian or Ubuntu (${os})`);
    else if (!apt) block("no apt-get");
    plan.commands.push(
      debianLike && apt
        ? `${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${plan.install.join(" ")}`
        : `install ${absent.map((need) => need.name).join(", ")} with this system's package manager`,
    );
  }

  if (docker === "denied" && !root) {
    plan.missing.push("permission to use Docker Engine (docker info: permission denied)");
    block("not running as root");
    plan.commands.push('sudo usermod -aG docker "$USER"   (then log in again)');
  } else if (docker === "down") {
    plan.missing.push("a running Docker Engine (docker info does not answer)");
    plan.steps.push("start-dockerd");
    if (!root) block("not running as root");
    const dockerd = ["dockerd", ...dockerdArgs(probe.daemonConfig())].join(" ");
    plan.commands.push(root ? `${dockerd} >>${DOCKERD_LOG} 2>&1 &` : `sudo sh -c '${dockerd} >>${DOCKERD_LOG} 2>&1 &'`);
  }

  if (imagesPresent === false) plan.missing.push(`the images ${IMAGES.join(", ")}`);
  if (root || imagesPresent !== true) {
    plan.steps.push("build-images");
    if (!root) block("not running as root");
    plan.commands.push(`${sudo}bash images/build.sh`);
  }
  if (pebbleMissing) {
    plan.missing.push(`Pebble ${PEBBLE_VERSION} (the ACME server the certificate tests run; built with Go, as any user)`);
    plan.steps.push("build-pebble");
    if (!probe.hasCommand("go")) {
      block(`no Go toolchain (go on the PATH or in ${GO_FALLBACK_DIR})`);
      plan.commands.push("install Go (https://go.dev/dl/), then run node scripts/setup.mjs --for-tests again");
    } else {
      plan.commands.push("node scripts/setup.mjs --for-tests   (again, once the above is done: it builds Pebble)");
    }
  }
  // Only root is missing, and as root this script would do every step.
  if (plan.blockers.length === 1 && plan.blockers[0] === "not running as root" && docker !== "denied") {
    plan.rootCommand = "sudo node scripts/setup.mjs";
  }
  return plan;
}

/** The lines that tell a person what is missing and what to run, for a plan that cannot run itself (or --check). */
export function reportLines(plan) {
  if (plan.missing.length === 0) return ["nothing missing"];
  const lines = [`missing: ${plan.missing.join("; ")}`];
  if (plan.blockers.length === 0) {
    lines.push(`to set it up, run as root: node scripts/setup.mjs (or npm run dev)`);
    return lines;
  }
  lines.push(`cannot set this machine up here: ${plan.blockers.join(", ")}; run:`);
  lines.push(...plan.commands.map((command) => `  ${command}`));
  if (plan.rootCommand) lines.push(`(or run \`${plan.rootCommand}\`, which does all of it)`);
  return lines;
}

/** The probe of this machine. */
export function systemProbe() {
  // sbin directories are not on a normal user's PATH on Debian, but dockerd, iptables and debootstrap live there.
  const searchPath = [...(process.env.PATH ?? "").split(delimiter), "/usr/local/sbin", "/usr/sbin", "/sbin", GO_FALLBACK_DIR].filter(Boolean);
  const executable = (path) => {
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  return {
    isRoot: () => process.getuid?.() === 0,
    osRelease() {
      let text;
      try {
        text = readFileSync("/etc/os-release", "utf8");
      } catch {
        return null;
      }
      const fields = Object.fromEntries(
        text
          .split("\n")
          .map((line) => /^([A-Z_]+)=(["']?)(.*)\2$/.exec(line.trim()))
          .filter(Boolean)
          .map((match) => [match[1], match[3]]),
      );
      return {
        id: fields.ID ?? "",
        idLike: (fields.ID_LIKE ?? "").split(/\s+/).filter(Boolean),
        name: fields.PRETTY_NAME ?? fields.NAME ?? fields.ID ?? "unknown",
      };
    },
    hasCommand: (name) => searchPath.some((dir) => executable(join(dir, name))),
    docker: dockerStatus,
    imagesPresent: () => spawnSync("docker", ["image", "inspect", ...IMAGES], { stdio: "ignore", timeout: 30_000 }).status === 0,
    pebbleBuilt: () => Object.values(pebbleFiles()).every((file) => existsSync(file)) && executable(pebbleFiles().pebble),
    daemonConfig: () => {
      try {
        return JSON.parse(readFileSync(DAEMON_JSON, "utf8"));
      } catch {
        return null; // none, or one dockerd will refuse anyway (its log then says why)
      }
    },
  };
}

function dockerStatus() {
  const info = spawnSync("docker", ["info", "--format", "{{.ServerVersion}}"], { encoding: "utf8", timeout: 30_000 });
  if (info.status === 0) return "answers";
  return /permission denied/i.test(info.stderr ?? "") ? "denied" : "down";
}

/**
 * Probes, then does what the plan says (unless it is blocked or `check` is set), with a line per
 * step and build.sh's own progress lines. Returns { ready, did }: `did` lists what it did, in words.
 */
export async function runSetup({ forTests = false, check = false, log = (line) => console.log(`[setup] ${line}`), probe = systemProbe() } = {}) {
  const started = Date.now();
  const plan = planSetup(probe, { forTests });
  log(`checking this machine (${plan.os}${plan.root ? ", as root" : ", not root"}) for what homeservers need${forTests ? " and the tests" : ""}`);
  if (check || plan.blockers.length > 0) {
    for (const line of reportLines(plan)) log(line);
    return { ready: plan.missing.length === 0, did: [] };
  }
  const did = [];
  try {
    for (const step of plan.steps) {
      if (step === "install") {
        log("apt-get update");
        await quietly("apt-get", ["update", "-q"]);
        log(`apt-get install ${plan.install.join(" ")}`);
        await quietly("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...plan.install]);
        did.push(`installed ${plan.install.join(", ")}`);
      } else if (step === "start-dockerd") {
        log(`starting dockerd in the background (log: ${DOCKERD_LOG}), waiting until docker info answers`);
        await startDockerd(dockerdArgs(probe.daemonConfig()));
        did.push("started dockerd");
      } else if (step === "build-pebble") {
        log(`building Pebble ${PEBBLE_VERSION} with Go into ${pebbleDir()} (once per version)`);
        const seconds = await buildPebble();
        did.push(`built Pebble ${PEBBLE_VERSION} in ${seconds}s`);
      } else {
        log("building the images if they are not current (bash images/build.sh)");
        const built = await buildImages();
        did.push(built.length > 0 ? `built ${built.join(", ")}` : "images up to date");
      }
    }
  } catch (error) {
    log(`FAILED: ${error.message}`);
    if (did.length > 0) log(`done before that: ${did.join("; ")}`);
    return { ready: false, did };
  }
  log(`done in ${Math.round((Date.now() - started) / 1000)}s: ${did.length > 0 ? did.join("; ") : "nothing to do"}`);
  return { ready: true, did };
}

/** Runs a command with its output kept, and shown only when it fails; resolves to its standard output. */
function quietly(command, args, env = {}) {
  return new Promise((resolveRun, reject) => {
    const child = spawn(command, args, { cwd: root, env: { ...process.env, DEBIAN_FRONTEND: "noninteractive", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let stdout = "";
    const keep = (chunk) => (output = (output + chunk).slice(-16_000));
    child.stdout.on("data", (chunk) => {
      keep(chunk);
      stdout += chunk;
    });
    child.stderr.on("data", keep);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (code === 0) return resolveRun(stdout);
      reject(new Error(`${command} ${args.join(" ")} failed (${code ?? signal}):\n${output.trimEnd().split("\n").slice(-30).join("\n")}`));
    });
  });
}

/**
 * `go install` of pebble and pebble-challtestsrv at PEBBLE_VERSION (through the Go module proxy),
 * plus Pebble's test certificates from the module's source, into a directory beside pebbleDir()
 * that is renamed into place when complete. Returns the seconds it took.
 */
async function buildPebble() {
  const started = Date.now();
  const go = ["go", join(GO_FALLBACK_DIR, "go")].find((candidate) => spawnSync(candidate, ["version"], { stdio: "ignore" }).status === 0);
  if (!go) throw new Error(`no Go toolchain (go on the PATH or in ${GO_FALLBACK_DIR})`);
  const dir = pebbleDir();
  const partial = `${dir}.partial-${process.pid}`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  try {
    const commands = ["pebble", "pebble-challtestsrv"].map((command) => `${PEBBLE_MODULE}/cmd/${command}@${PEBBLE_VERSION}`);
    // -mod=mod: a GOFLAGS from the environment that asks for vendoring would fail an install outside a module.
    const goEnv = { GOFLAGS: "-mod=mod" };
    await quietly(go, ["install", ...commands], { ...goEnv, GOBIN: join(partial, "bin") });
    const source = JSON.parse(await quietly(go, ["mod", "download", "-json", `${PEBBLE_MODULE}@${PEBBLE_VERSION}`], goEnv)).Dir;
    cpSync(join(source, "test", "certs"), join(partial, "certs"), { recursive: true });
    rmSync(dir, { recursive: true, force: true });
    renameSync(partial, dir);
  } finally {
    rmSync(partial, { recursive: true, force: true });
  }
  return Math.round((Date.now() - started) / 1000);
}

/** dockerd outlives us (homeservers outlive `npm run dev`): its own session, output to the log file. */
async function startDockerd(args) {
  const out = openSync(DOCKERD_LOG, "a");
  const dockerd = spawn("dockerd", args, { detached: true, stdio: ["ignore", out, out] });
  closeSync(out);
  let exited = null;
  dockerd.on("exit", (code, signal) => (exited = code ?? signal));
  dockerd.on("error", (error) => (exited = error.message));
  dockerd.unref();
  const deadline = Date.now() + 60_000;
  while (dockerStatus() !== "answers") {
    if (exited !== null || Date.now() > deadline) {
      const tail = readFileSync(DOCKERD_LOG, "utf8").trimEnd().split("\n").slice(-30).join("\n");
      throw new Error(`dockerd ${exited === null ? "did not answer within 60s" : `exited (${exited})`}; the end of ${DOCKERD_LOG}:\n${tail}`);
    }
    await sleep(500);
  }
}

/** bash images/build.sh with its progress passed through; returns the images it built. */
function buildImages() {
  return new Promise((resolveBuild, reject) => {
    const child = spawn("bash", [join(root, "images", "build.sh")], { cwd: root, stdio: ["ignore", "pipe", "inherit"] });
    let output = "";
    child.stdout.on("data", (chunk) => {
      process.stdout.write(chunk);
      output += chunk;
    });
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (code !== 0) return reject(new Error(`bash images/build.sh failed (${code ?? signal})`));
      resolveBuild([...output.matchAll(/^\[images\s+\d+s\] \w+: built (\S+)/gm)].map((match) => match[1]));
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { "for-tests": { type: "boolean", default: false }, check: { type: "boolean", default: false } } });
  const { ready } = await runSetup({ forTests: values["for-tests"], check: values.check });
  process.exit(ready ? 0 : 1);
}
