/**
 * The updater end to end: real compiled binaries of different versions built
 * by build.ts, served by a loopback HTTP release host, installed and rolled
 * out by a detached `update-loop`.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compile } from "../build.ts";
import { eventually, isAlive, keepersOf, loopBinaryOf, makeHome, pgrpOf, readJson, runProcess, TARGET, type TestHome } from "./helpers/berth.ts";
import { holdLock } from "./helpers/holder.ts";
import { newKey, publishSigned } from "./helpers/signed-release.ts";

const UPDATE_WAIT_MS = 30_000;
let workDir: string;
const binaries: Record<string, string> = {};
/** The release key the binaries under test trust. */
const KEY = newKey();

/** A release host: a folder served over loopback HTTP; assets of `stalled` versions hang until released. */
let host: { url: string; root: string; stalled: Set<string>; release(): void; server: ReturnType<typeof Bun.serve> };

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), "berth-updater-"));
  for (const version of ["1.0.0", "1.1.0"]) {
    binaries[version] = join(workDir, `berth-${version}`);
    await compile({ version, outfile: binaries[version] as string, trustedKeys: [KEY.spki] });
  }
  const root = join(workDir, "host");
  mkdirSync(root);
  let releaseStalled: () => void = () => {};
  let stalledGate = new Promise<void>((resolve) => (releaseStalled = resolve));
  const stalled = new Set<string>();
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      const path = new URL(request.url).pathname;
      const file = join(root, path);
      if (!file.startsWith(root) || !existsSync(file)) return new Response("not found", { status: 404 });
      const version = path.split("/")[1] ?? "";
      if (path.includes("/berth-") && stalled.has(version)) await stalledGate;
      return new Response(Bun.file(file));
    },
  });
  host = {
    url: `http://127.0.0.1:${server.port}`,
    root,
    stalled,
    server,
    release() {
      releaseStalled();
      stalledGate = new Promise<void>((resolve) => (releaseStalled = resolve));
    },
  };
}, 120_000);

afterAll(() => {
  host?.release();
  host?.server.stop(true);
  rmSync(workDir, { recursive: true, force: true });
});

/** Publishes `file` as `version` for this machine's target, signed with KEY, and points latest.json at it. */
function publish(version: string, file: string, options: { corrupt?: boolean } = {}): void {
  publishSigned(host.root, version, file, { key: KEY, target: TARGET, cacheDir: workDir, ...options });
}

/** A release that answers --version but fails as a server: `exit` at once, or `hang` without listening. */
function brokenRelease(version: string, mode: "exit" | "hang"): string {
  const file = join(workDir, `broken-${version}-${mode}`);
  const serve = mode === "exit" ? `echo "broken ${version}: refusing to serve" >&2\nexit 1` : `echo "broken ${version}: hanging" >&2\nexec sleep 600`;
  writeFileSync(file, `#!/bin/sh\nif [ "$1" = "--version" ]; then echo ${version}; exit 0; fi\n${serve}\n`);
  chmodSync(file, 0o755);
  return file;
}

const homes: TestHome[] = [];
afterEach(async () => {
  host.release();
  host.stalled.clear();
  for (const home of homes.splice(0)) await home.cleanup();
});

type Installed = { home: TestHome; berth: (args: string[]) => ReturnType<typeof runProcess> };

/** Installs 1.0.0 with its own `install`, as install.sh would, and publishes it as latest. */
async function installed(settings: object = {}): Promise<Installed> {
  const home = makeHome({ install: false, settings: { startTimeoutMs: 3_000, stopGraceMs: 5_000, ...settings } });
  homes.push(home);
  publish("1.0.0", binaries["1.0.0"] as string);
  const env = {
    BERTH_RELEASE_BASE_URL: host.url,
    BERTH_UPDATE_INITIAL_DELAY_MS: "100",
    BERTH_UPDATE_INTERVAL_MS: "1000",
  };
  const install = await home.exec([binaries["1.0.0"] as string, "install", "--no-modify-path"], { env });
  expect(install.json?.status).toBe("installed");
  const managed = home.path("packages/standalone/current/berth");
  return { home, berth: (args) => home.exec([managed, ...args], { env }) };
}

function updaterPid(home: TestHome): number {
  return readJson(home.path("daemon/updater.pid")).pid;
}

function currentRelease(home: TestHome): string {
  return readlinkSync(home.path("packages/standalone/current"));
}

function updaterLog(home: TestHome): string {
  return existsSync(home.path("daemon/updater.log")) ? readFileSync(home.path("daemon/updater.log"), "utf8") : "";
}

async function appServerVersion(berth: Installed["berth"]): Promise<string | undefined> {
  return (await berth(["version"])).json?.appServerVersion;
}

describe("updater", () => {
  test("bootstrap runs the app-server and exactly one updater, each in its own group; stop leaves the updater", async () => {
    const { home, berth } = await installed();
    const first = await berth(["bootstrap"]);
    expect(first.json).toMatchObject({ status: "bootstrapped", backend: "pid", autoUpdateEnabled: true, remoteControlEnabled: false, managedVersion: "1.0.0", appServerVersion: "1.0.0" });
    const server = first.json.pid as number;
    const updater = updaterPid(home);
    expect(pgrpOf(server)).toBe(server);
    expect(pgrpOf(updater)).toBe(updater);
    expect(readJson(home.path("daemon/settings.json")).autoUpdate).toBe(true);

    const second = await berth(["bootstrap"]);
    expect(second.json.status).toBe("bootstrapped");
    expect(second.json.pid).toBe(server);
    const replacement = updaterPid(home);
    expect(isAlive(updater)).toBe(false);
    expect(isAlive(replacement)).toBe(true);
    // The replacement may be inside one of its execs (launcher → Bun → the sh loop): keepersOf looks again while
    // its /proc facts are empty; an old loop still ending is waited out here.
    let loops: number[] = [];
    await eventually(() => (loops = keepersOf(home)).length === 1 && loops[0] === replacement);
    expect(loops).toEqual([replacement]);

    expect((await berth(["stop"])).json.status).toBe("stopped");
    expect(isAlive(replacement)).toBe(true);
    expect((await berth(["status"])).json.updater).toMatchObject({ state: "running", pid: replacement });

    const off = await berth(["bootstrap", "--no-auto-update"]);
    expect(off.json).toMatchObject({ status: "bootstrapped", autoUpdateEnabled: false });
    expect(await eventually(() => !isAlive(replacement))).toBe(true);
  });

  test("a newer release is installed, the app-server moves onto it, and the updater re-executes from it", async () => {
    const { home, berth } = await installed();
    await berth(["bootstrap"]);
    const updater = updaterPid(home);
    const published = Date.now();
    publish("1.1.0", binaries["1.1.0"] as string);
    expect(await eventually(async () => (await appServerVersion(berth)) === "1.1.0", UPDATE_WAIT_MS, 100)).toBe(true);
    const rolloutMs = Date.now() - published;
    console.error(`publish → app-server answering 1.1.0: ${rolloutMs} ms (interval 1 s)`);
    expect(currentRelease(home)).toBe(`releases/1.1.0-${TARGET}`);
    // Same pid (execve): the sh loop, now exec'd by the 1.1.0 binary, and status says so.
    expect(await eventually(() => (loopBinaryOf(updater) ?? "").includes(`1.1.0-${TARGET}`))).toBe(true);
    expect(realpathSync(`/proc/${updater}/exe`)).toBe(realpathSync("/bin/sh"));
    expect(updaterPid(home)).toBe(updater);
    expect(await eventually(async () => (await berth(["status"])).json.updater?.version === "1.1.0")).toBe(true);
    expect(updaterLog(home)).toContain("check: updated: installed 1.1.0");
    const status = (await berth(["status"])).json;
    expect(status.updater).toMatchObject({ state: "running", pid: updater });
    expect(status.managedVersion).toBe("1.1.0");
    expect(status.releases.map((r: { version: string }) => r.version)).toEqual(["1.0.0", "1.1.0"]);
  });

  for (const mode of ["exit", "hang"] as const) {
    test(`a broken release (${mode === "exit" ? "exits at once" : "never answers initialize"}) is rolled back and quarantined`, async () => {
      const { home, berth } = await installed({ startTimeoutMs: 1_500 });
      await berth(["bootstrap"]);
      publish("1.2.0", brokenRelease("1.2.0", mode));
      expect(await eventually(() => /check: rolledBack: 1\.2\.0/.test(updaterLog(home)), UPDATE_WAIT_MS, 100)).toBe(true);
      expect(currentRelease(home)).toBe(`releases/1.0.0-${TARGET}`);
      expect(await appServerVersion(berth)).toBe("1.0.0");
      const rolledBackAt = updaterLog(home).length;
      // Two more checks: the quarantined version is never retried.
      expect(await eventually(() => (updaterLog(home).slice(rolledBackAt).match(/check: quarantined/g) ?? []).length >= 2, UPDATE_WAIT_MS, 100)).toBe(true);
      expect(updaterLog(home).slice(rolledBackAt)).not.toContain("installed 1.2.0");
      expect(currentRelease(home)).toBe(`releases/1.0.0-${TARGET}`);
      const status = (await berth(["status"])).json;
      expect(status.updater.quarantined).toEqual(["1.2.0"]);
      expect(status.appServer).toMatchObject({ state: "running", version: "1.0.0" });
    });
  }

  test("a corrupted asset installs nothing and leaves the app-server alone; the failure shows in status and the log", async () => {
    const { home, berth } = await installed();
    const boot = await berth(["bootstrap"]);
    publish("1.1.0", binaries["1.1.0"] as string, { corrupt: true });
    expect(await eventually(() => /check: failed: .*does not match its manifest/.test(updaterLog(home)), UPDATE_WAIT_MS, 100)).toBe(true);
    expect(currentRelease(home)).toBe(`releases/1.0.0-${TARGET}`);
    expect(existsSync(home.path(`packages/standalone/releases/1.1.0-${TARGET}`))).toBe(false);
    const status = (await berth(["status"])).json;
    expect(status.appServer.pid).toBe(boot.json.pid);
    expect(status.updater.lastCheck.outcome).toBe("failed");
    expect(status.updater.lastCheck.message).toContain("does not match its manifest");
    const manual = await berth(["update"]);
    expect(manual.code).toBe(1);
    expect(manual.json.error.code).toBe("CHECKSUM_MISMATCH");
  });

  test("the loop does not wait for a held daemon.lock: it installs, defers the restart, and restarts once the lock is free", async () => {
    const { home, berth } = await installed();
    await berth(["bootstrap"]);
    const holder = await holdLock(home.path("daemon/daemon.lock"));
    try {
      publish("1.1.0", binaries["1.1.0"] as string);
      expect(await eventually(() => /check: deferred/.test(updaterLog(home)), UPDATE_WAIT_MS, 100)).toBe(true);
      expect(currentRelease(home)).toBe(`releases/1.1.0-${TARGET}`);
      expect(await appServerVersion(berth)).toBe("1.0.0");
      // The holder was never blocked: it still answers and releases on request.
      holder.send("release");
      expect(await holder.exited).toBe(0);
    } finally {
      await holder.kill().catch(() => {});
    }
    expect(await eventually(async () => (await appServerVersion(berth)) === "1.1.0", UPDATE_WAIT_MS, 100)).toBe(true);
  });

  test("stopping the updater's group mid-download leaves current valid; the next run completes", async () => {
    const { home, berth } = await installed();
    await berth(["bootstrap"]);
    const updater = updaterPid(home);
    host.stalled.add("1.1.0");
    publish("1.1.0", binaries["1.1.0"] as string);
    expect(await eventually(() => existsSync(home.path("packages/standalone/downloads")), UPDATE_WAIT_MS, 50)).toBe(true);
    process.kill(-updater, "SIGTERM");
    expect(await eventually(() => !isAlive(updater))).toBe(true);
    expect(currentRelease(home)).toBe(`releases/1.0.0-${TARGET}`);
    expect((await berth(["version"])).json.appServerVersion).toBe("1.0.0");
    host.stalled.clear();
    host.release();
    const update = await berth(["update"]);
    expect(update.json).toMatchObject({ status: "updated", latestVersion: "1.1.0", managedVersion: "1.1.0", restarted: true, appServerVersion: "1.1.0" });
    expect(currentRelease(home)).toBe(`releases/1.1.0-${TARGET}`);
  });

  test("a crash during a stalled download is still restarted at once: checks do not blind the keeper", async () => {
    const { home, berth } = await installed();
    const boot = await berth(["bootstrap"]);
    host.stalled.add("1.1.0");
    publish("1.1.0", binaries["1.1.0"] as string);
    expect(await eventually(() => existsSync(home.path("packages/standalone/downloads")), UPDATE_WAIT_MS, 50)).toBe(true);
    process.kill(boot.json.pid as number, "SIGKILL");
    expect(await eventually(async () => {
      const now = (await berth(["version"])).json;
      return now?.status === "running" && now.pid !== boot.json.pid;
    }, UPDATE_WAIT_MS, 100)).toBe(true);
    // The download still hangs: nothing was installed meanwhile.
    expect(currentRelease(home)).toBe(`releases/1.0.0-${TARGET}`);
    host.release();
    expect(await eventually(async () => (await appServerVersion(berth)) === "1.1.0", UPDATE_WAIT_MS, 100)).toBe(true);
  });

  test("update --check reports without installing; --release installs a chosen version", async () => {
    const { home, berth } = await installed();
    publish("1.1.0", binaries["1.1.0"] as string);
    const check = await berth(["update", "--check"]);
    expect(check.json).toMatchObject({ status: "updateAvailable", latestVersion: "1.1.0", managedVersion: "1.0.0" });
    expect(currentRelease(home)).toBe(`releases/1.0.0-${TARGET}`);
    const pinned = await berth(["update", "--release", "1.1.0"]);
    expect(pinned.json).toMatchObject({ status: "updated", managedVersion: "1.1.0", restarted: false });
    // No app-server ran, so none was started: the update restarts only one that runs.
    expect((await berth(["version"])).json.error.code).toBe("NOT_RUNNING");
    expect((await berth(["update"])).json.status).toBe("upToDate");
  });
});

describe("manual update and the loop", () => {
  test("a manual update that installs a release replaces the running loop; status.updater.version says so", async () => {
    const { home } = await installed();
    const managed = home.path("packages/standalone/current/berth");
    // A loop that would not check on its own for a long time: only the manual update moves it.
    const env = { BERTH_RELEASE_BASE_URL: host.url, BERTH_UPDATE_INITIAL_DELAY_MS: "600000" };
    const boot = await home.exec([managed, "bootstrap"], { env });
    expect(boot.json.status).toBe("bootstrapped");
    // The loop records its version as it starts.
    expect(await eventually(async () => (await home.exec([managed, "status"], { env })).json.updater?.version === "1.0.0", 20_000, 100)).toBe(true);
    const oldLoop = updaterPid(home);

    publish("1.1.0", binaries["1.1.0"] as string);
    const update = await home.exec([managed, "update"], { env });
    expect(update.json).toMatchObject({ status: "updated", managedVersion: "1.1.0", updater: { replaced: true } });
    expect(isAlive(oldLoop)).toBe(false);
    const newLoop = updaterPid(home);
    expect(update.json.updater.pid).toBe(newLoop);
    expect(await eventually(() => loopBinaryOf(newLoop) === realpathSync(home.path(`packages/standalone/releases/1.1.0-${TARGET}/berth`)))).toBe(true);
    expect(await eventually(async () => (await home.exec([managed, "status"], { env })).json.updater?.version === "1.1.0", 20_000, 100)).toBe(true);
    expect(updaterLog(home)).toMatch(/^\S+Z manual update \(pid \d+\): updated: /m);
  }, 120_000);
});
