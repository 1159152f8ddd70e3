/**
 * Issue 8 items 8 and 9 (the update and settings parts): an update killed
 * after flipping `current` is finished by the next `update`, leftovers of
 * killed downloads go, and the small faults each get a documented answer.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, existsSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { versionFromReleaseDir } from "../src/daemon/context.ts";
import { loadSettings, UPDATE_INTERVAL_FLOOR_MS } from "../src/daemon/settings.ts";
import { readUpdaterState } from "../src/daemon/updater.ts";
import { eventually, installRelease, isAlive, killProcessesOf, homesPerTest } from "./helpers/berth.ts";
import { holdLock } from "./helpers/holder.ts";
import { remountReadOnly } from "./helpers/mount.ts";
import { serveDirectory, type DirectoryServer } from "./helpers/release-server.ts";
import { newKey, writeSigned } from "./helpers/signed-release.ts";

const SLOW_TEST_MS = 120_000;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
const newHome = homesPerTest(afterEach);

const KEY = newKey();

/**
 * A release host whose signed latest.json names `version` (nothing else: these
 * updates download nothing), and the env that makes berth trust its key.
 */
async function releaseHost(version: string): Promise<DirectoryServer & { env: Record<string, string> }> {
  const root = mkdtempSync(join(tmpdir(), "berth-host-"));
  writeSigned(join(root, "latest.json"), JSON.stringify({ version }), KEY);
  const keyFile = join(root, "key.pem");
  writeFileSync(keyFile, KEY.publicPem);
  const server = await serveDirectory(root);
  cleanups.push(async () => {
    await server.stop();
    rmSync(root, { recursive: true, force: true });
  });
  return Object.assign(server, { env: { BERTH_RELEASE_BASE_URL: server.url, BERTH_TRUSTED_KEYS: keyFile } });
}

/** The pid of a process that has exited (its pid is free), for a download leftover's name. */
async function deadPid(): Promise<number> {
  const child = Bun.spawn({ cmd: ["true"] });
  await child.exited;
  return child.pid;
}

describe("item 8: update finishes a restart an interrupted update owed", () => {
  test(
    "current flipped to 0.2.0 while 0.1.0 still runs: update restarts onto 0.2.0 and removes a killed download's folder",
    async () => {
      const home = newHome({ version: "0.1.0" });
      const started = await home.run(["start"]);
      expect(started.json.appServerVersion).toBe("0.1.0");
      installRelease(home.home, "0.2.0"); // what a killed update leaves: current flipped, server not restarted
      const leftover = home.path("packages", "standalone", "downloads", `${await deadPid()}-abc`);
      mkdirSync(leftover, { recursive: true, mode: 0o700 });
      writeFileSync(join(leftover, "berth"), "partial");
      const host = await releaseHost("0.2.0");
      const update = await home.run(["update"], { env: host.env });
      expect(update.json.status).toBe("updated");
      expect(update.json.restarted).toBe(true);
      expect(update.json.appServerVersion).toBe("0.2.0");
      expect(isAlive(started.json.pid)).toBe(false);
      expect(existsSync(leftover)).toBe(false);
      const again = await home.run(["update"], { env: host.env });
      expect(again.json.status).toBe("upToDate");
      expect(again.json.restarted).toBe(false);
    },
    SLOW_TEST_MS,
  );
});

describe("item 9: small faults, each with a documented answer", () => {
  test("versions with build metadata count as installed (pure)", () => {
    expect(versionFromReleaseDir("2.0.0+b1-linux-x64")).toBe("2.0.0+b1");
    expect(versionFromReleaseDir("2.0.0-rc.1+b.7-darwin-arm64")).toBe("2.0.0-rc.1+b.7");
    expect(versionFromReleaseDir("1.4.0-linux-x64-musl")).toBe("1.4.0");
    expect(versionFromReleaseDir("garbage")).toBeUndefined();
  });

  test("update.intervalMs: 0 is raised to the floor; a value of the wrong type is STATE_CORRUPT naming the key", () => {
    const home = newHome({ install: false, settings: { update: { intervalMs: 0 } } });
    expect(loadSettings(home.path("daemon", "settings.json"), {}).update.intervalMs).toBe(UPDATE_INTERVAL_FLOOR_MS);
    writeFileSync(home.path("daemon", "settings.json"), JSON.stringify({ stopGraceMs: "soon" }));
    expect(() => loadSettings(home.path("daemon", "settings.json"), {})).toThrow(/stopGraceMs must be a non-negative number/);
  });

  test("updater-state.json holding null reads as empty history", () => {
    const home = newHome({ install: false });
    writeFileSync(home.path("state.json"), "null");
    expect(readUpdaterState(home.path("state.json"))).toEqual({ quarantined: [] });
  });

  test("update --release ../../x is USAGE (exit 2) and fetches nothing", async () => {
    const home = newHome();
    const host = await releaseHost("0.1.0");
    const result = await home.run(["update", "--release", "../../x"], { env: host.env });
    expect(result.code).toBe(2);
    expect(result.json.error.code).toBe("USAGE");
    expect(host.requests).toEqual([]);
  });

  test("a failed manual update is recorded in status.updater.lastCheck", async () => {
    const home = newHome();
    const host = await releaseHost("0.1.0");
    await host.stop(); // nothing listens there any more: the fetch fails
    const failed = await home.run(["update"], { env: host.env });
    expect(failed.json.status).toBe("error");
    const status = await home.run(["status"]);
    expect(status.json.updater.lastCheck.outcome).toBe("failed");
  });

  test("update --check does not wait for daemon.lock (the download side never takes it)", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { mode: 0o700 });
    const holder = await holdLock(home.path("daemon", "daemon.lock"));
    cleanups.push(() => holder.kill());
    const host = await releaseHost("0.3.0");
    const check = await home.run(["update", "--check"], { env: { ...host.env, BERTH_LOCK_WAIT_MS: "1000" } });
    expect(check.json.status).toBe("updateAvailable");
  });

  test("a corrupt settings.json does not block stop", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    writeFileSync(home.path("daemon", "settings.json"), "{ not json");
    const stop = await home.run(["stop"]);
    expect(stop.json.status).toBe("stopped");
    expect(isAlive(started.json.pid)).toBe(false);
    expect(readFileSync(home.path("daemon", "settings.json"), "utf8")).toBe("{ not json");
  }, SLOW_TEST_MS);

  test("BERTH_HOME reached through a symlink: version and bootstrap recognise the server", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    const link = join(dirname(home.home), "home-link");
    symlinkSync(home.home, link);
    // Processes started through the link carry BERTH_HOME=<link>, which the home's own cleanup does not match.
    cleanups.push(() => killProcessesOf(link));
    const version = await home.run(["version"], { env: { BERTH_HOME: link } });
    expect(version.json.status).toBe("running");
    expect(version.json.pid).toBe(started.json.pid);
    const boot = await home.run(["bootstrap", "--no-auto-update"], { env: { BERTH_HOME: link } });
    expect(boot.json.status).toBe("bootstrapped");
    expect(boot.json.pid).toBe(started.json.pid);
  }, SLOW_TEST_MS);

  test("a SIGSTOPped server is slow, not foreign: start and version say NOT_READY and leave it alive", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    const pid = started.json.pid as number;
    process.kill(pid, "SIGSTOP");
    cleanups.push(() => {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        // gone
      }
    });
    const settings = { startTimeoutMs: 1_000 };
    writeFileSync(home.path("daemon", "settings.json"), JSON.stringify(settings));
    const start = await home.run(["start"]);
    expect(start.json.error.code).toBe("NOT_READY");
    expect(start.json.error.message).toContain("SIGSTOP");
    const version = await home.run(["version"]);
    expect(version.json.error.code).toBe("NOT_READY");
    expect(isAlive(pid)).toBe(true);
    process.kill(pid, "SIGCONT");
    expect((await home.run(["version"])).json.pid).toBe(pid);
  }, SLOW_TEST_MS);

  const isRoot = process.getuid?.() === 0;
  // A read-only BERTH_HOME is staged with a read-only bind mount, which needs root.
  test.skipIf(!isRoot)("stop still stops the server on a read-only BERTH_HOME; a write there is UNSAFE_STATE, not INTERNAL", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    expect(spawnSync("mount", ["--bind", home.home, home.home]).status).toBe(0);
    // Lazy: a process still in there (a server that did not stop) must not leave the mount, read-only, behind.
    cleanups.push(() => void spawnSync("umount", ["-l", home.home]));
    // Busy (EBUSY) while the new server writes through the new mount just then: once in a full run under load.
    expect(await remountReadOnly(home.home)).toMatchObject({ readOnly: true });
    const enable = await home.run(["enable-remote-control"]);
    expect(enable.json.error.code).toBe("UNSAFE_STATE");
    expect(enable.json.error.message).toContain("EROFS");
    const stop = await home.run(["stop"]);
    expect(stop.json.status).toBe("stopped");
    expect(await eventually(() => !isAlive(started.json.pid))).toBe(true);
    // The record it could not remove there is stale, not an obstacle: a second stop (and status) says nothing runs.
    const again = await home.run(["stop"]);
    expect(again.json).toMatchObject({ status: "notRunning" });
    expect((await home.run(["status"])).json.appServer.pid).toBeUndefined();
  }, SLOW_TEST_MS);
});
