/**
 * The lifecycle commands end to end: real `berth` processes from source, a
 * real app-server launched through the managed-binary launcher, real signals.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { socketPlan } from "../src/platform/paths.ts";
import { BUN, eventually, homesPerTest, installFixtureRelease, installRelease, isAlive, processesOf, readJson, serversOf, type TestHome } from "./helpers/berth.ts";
import { holdLock } from "./helpers/holder.ts";

const newHome = homesPerTest(afterEach);

function statField(pid: number, index: number): string {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  return text.slice(text.lastIndexOf(")") + 2).split(" ")[index] as string;
}

/** SIGKILLs the keeper `start` launched (its whole group, by the pid in updater.pid) and waits until it is gone. */
async function killKeeper(home: TestHome): Promise<void> {
  const keeper = readJson(home.path("daemon/updater.pid")).pid as number;
  process.kill(-keeper, "SIGKILL");
  expect(await eventually(() => !isAlive(keeper))).toBe(true);
}

describe("start, version, stop", () => {
  test("start launches a detached server that answers; start again is alreadyRunning; stop stops it", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    expect(started.code).toBe(0);
    expect(started.json).toMatchObject({
      status: "started",
      backend: "pid",
      managedBinaryPath: home.path("packages/standalone/current/berth"),
      managedVersion: "0.1.0",
      socketPath: home.path("daemon/app-server.sock"),
      appServerVersion: "0.1.0",
    });
    expect(started.stdout.trim().split("\n")).toHaveLength(1);
    const pid = started.json.pid as number;
    expect(readJson(home.path("daemon/app-server.pid")).pid).toBe(pid);
    expect(readJson(home.path("daemon/wanted.json")).appServer).toBe("running");

    // Detached: own session and group, stdin /dev/null, log for stdout+stderr, cwd BERTH_HOME, umask 077.
    expect(Number(statField(pid, 2))).toBe(pid); // pgrp
    expect(Number(statField(pid, 3))).toBe(pid); // session
    expect(readlinkSync(`/proc/${pid}/fd/0`)).toBe("/dev/null");
    expect(readlinkSync(`/proc/${pid}/fd/1`)).toBe(home.path("daemon/app-server.log"));
    expect(readlinkSync(`/proc/${pid}/fd/2`)).toBe(home.path("daemon/app-server.log"));
    expect(readlinkSync(`/proc/${pid}/cwd`)).toBe(home.home);
    expect(readFileSync(`/proc/${pid}/status`, "utf8")).toMatch(/Umask:\s+0077/);
    expect(statSync(home.path("daemon")).mode & 0o777).toBe(0o700);
    expect(statSync(home.path("daemon/app-server.pid")).mode & 0o777).toBe(0o600);

    const again = await home.run(["start"]);
    expect(again.json).toMatchObject({ status: "alreadyRunning", backend: "pid", pid });

    const version = await home.run(["version"]);
    expect(version.json).toMatchObject({ status: "running", backend: "pid", pid, appServerVersion: "0.1.0" });

    const stopped = await home.run(["stop"]);
    expect(stopped.json).toMatchObject({ status: "stopped" });
    expect(isAlive(pid)).toBe(false);
    expect(existsSync(home.path("daemon/app-server.pid"))).toBe(false);
    expect(existsSync(home.path("daemon/app-server.sock"))).toBe(false);
    expect(readJson(home.path("daemon/wanted.json")).appServer).toBe("stopped");

    const stoppedAgain = await home.run(["stop"]);
    expect(stoppedAgain.json).toMatchObject({ status: "notRunning", backend: null });
    const notRunning = await home.run(["version"]);
    expect(notRunning.code).toBe(1);
    expect(notRunning.json.error.code).toBe("NOT_RUNNING");
  });

  test("start returns while its stdout and stderr are pipes (as under ssh), and they reach EOF", async () => {
    const home = newHome();
    // runProcess reads both pipes to EOF: if the daemon inherited them, this would hang until the timeout.
    const started = await home.run(["start"], { timeoutMs: 20_000 });
    expect(started.code).toBe(0);
    expect(isAlive(started.json.pid)).toBe(true);
  });

  test("restart replaces the process", async () => {
    const home = newHome();
    const first = await home.run(["start"]);
    const restarted = await home.run(["restart"]);
    expect(restarted.json).toMatchObject({ status: "restarted", backend: "pid", appServerVersion: "0.1.0" });
    expect(restarted.json.pid).not.toBe(first.json.pid);
    expect(isAlive(first.json.pid)).toBe(false);
    expect(serversOf(home)).toEqual([restarted.json.pid]);
  });

  test("status reports stopped, then running, without failing", async () => {
    const home = newHome();
    const before = await home.run(["status"]);
    expect(before.code).toBe(0);
    expect(before.json).toMatchObject({ status: "stopped", appServer: { state: "stopped" }, managedVersion: "0.1.0" });
    const started = await home.run(["start"]);
    const after = await home.run(["status"]);
    expect(after.json).toMatchObject({ status: "running", appServer: { state: "running", pid: started.json.pid, version: "0.1.0", answering: true } });
    expect(after.json.releases).toEqual([{ name: expect.stringMatching(/^0\.1\.0-/), version: "0.1.0", current: true }]);
  });
});

describe("concurrency", () => {
  test("20 concurrent starts from separate processes: exactly one server, exactly one 'started'", async () => {
    const home = newHome();
    const results = await Promise.all(Array.from({ length: 20 }, () => home.run(["start"])));
    for (const result of results) expect(result.code).toBe(0);
    const statuses = results.map((r) => r.json.status);
    expect(statuses.filter((s) => s === "started")).toHaveLength(1);
    expect(statuses.filter((s) => s === "alreadyRunning")).toHaveLength(19);
    const pids = new Set(results.map((r) => r.json.pid));
    expect(pids.size).toBe(1);
    expect(serversOf(home)).toEqual([...pids]);
  });

  test("a storm of 50 start/stop/restart from 5 processes leaves at most one server and a consistent record", async () => {
    const home = newHome({ settings: { stopGraceMs: 5_000 } });
    const actions = ["start", "stop", "restart", "start", "restart", "stop", "start", "restart", "stop", "start"];
    const worker = async (offset: number) => {
      const outcomes: number[] = [];
      for (let i = 0; i < actions.length; i += 1) {
        const result = await home.run([actions[(i + offset) % actions.length] as string]);
        outcomes.push(result.code);
      }
      return outcomes;
    };
    const codes = (await Promise.all([0, 1, 2, 3, 4].map(worker))).flat();
    expect(codes).toHaveLength(50);
    expect(codes.every((code) => code === 0)).toBe(true);
    const servers = serversOf(home);
    expect(servers.length).toBeLessThanOrEqual(1);
    const pidFile = home.path("daemon/app-server.pid");
    if (servers.length === 1) {
      expect(readJson(pidFile).pid).toBe(servers[0] as number);
      expect((await home.run(["version"])).json.pid).toBe(servers[0] as number);
    } else {
      expect(existsSync(pidFile)).toBe(false);
    }
    await home.run(["stop"]);
    expect(serversOf(home)).toEqual([]);
  });

  test("a second mutating command waits for daemon.lock, then fails with LOCK_TIMEOUT; version and status do not block", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { mode: 0o700 });
    const holder = await holdLock(home.path("daemon/daemon.lock"));
    const blocked = await home.run(["start"], { env: { BERTH_LOCK_WAIT_MS: "300" } });
    expect(blocked.code).toBe(1);
    expect(blocked.json.error.code).toBe("LOCK_TIMEOUT");
    expect(blocked.json.error.message).toContain("daemon.lock");
    const status = await home.run(["status"], { timeoutMs: 30_000 });
    expect(status.json.status).toBe("stopped");
    const version = await home.run(["version"], { timeoutMs: 30_000 });
    expect(version.json.error.code).toBe("NOT_RUNNING");
    await holder.kill();
    expect((await home.run(["start"])).json.status).toBe("started");
  });
});

describe("crashes and strangers", () => {
  test("a berth SIGKILLed while holding the reservation: the next start recovers", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { mode: 0o700 });
    const pidPath = home.path("daemon/app-server.pid");
    const holder = await holdLock(`${pidPath}.lock`, pidPath);
    expect(readFileSync(pidPath, "utf8")).toBe("");
    await holder.kill();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    expect(readJson(pidPath).pid).toBe(started.json.pid);
  });

  test("a record naming a live process berth did not start: never signalled, treated as stale", async () => {
    const home = newHome();
    const stranger = Bun.spawn({ cmd: ["sleep", "600"], stdin: "ignore" });
    try {
      mkdirSync(home.path("daemon"), { mode: 0o700 });
      writeFileSync(home.path("daemon/app-server.pid"), JSON.stringify({ pid: stranger.pid, processStartTime: "some-other-boot/1" }));
      const stopped = await home.run(["stop"]);
      expect(stopped.json.status).toBe("notRunning");
      writeFileSync(home.path("daemon/app-server.pid"), JSON.stringify({ pid: stranger.pid, processStartTime: "some-other-boot/1" }));
      const started = await home.run(["start"]);
      expect(started.json.status).toBe("started");
      expect(started.json.pid).not.toBe(stranger.pid);
      await home.run(["restart"]);
      await home.run(["stop"]);
      expect(isAlive(stranger.pid)).toBe(true);
    } finally {
      stranger.kill("SIGKILL");
    }
  });

  test("a server that ignores SIGTERM, and its child, are both gone after stopGraceMs", async () => {
    const home = newHome({ settings: { stopGraceMs: 300 } });
    installFixtureRelease(home.home, join(import.meta.dir, "fixtures/stubborn-server.ts"));
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    const log = () => readFileSync(home.path("daemon/app-server.log"), "utf8");
    expect(await eventually(() => /stubborn-server child (\d+)/.test(log()))).toBe(true);
    const child = Number(/stubborn-server child (\d+)/.exec(log())?.[1]);
    expect(isAlive(child)).toBe(true);
    const stopped = await home.run(["stop"]);
    expect(stopped.json.status).toBe("stopped");
    expect(isAlive(started.json.pid)).toBe(false);
    expect(isAlive(child)).toBe(false);
    expect(log()).toContain("ignoring SIGTERM");
  });

  test("a server that never answers initialize: NOT_READY with the log tail, nothing left running, the wanted state as it was", async () => {
    const home = newHome({ settings: { startTimeoutMs: 800 } });
    installRelease(home.home, "0.1.0", `#!/bin/sh\necho "booting but never listening" >&2\nexec sleep 600\n`);
    // start records "running" while the server starts up; a failed start puts the file back as it was.
    const wanted = `{"appServer":"stopped","since":"2020-01-01T00:00:00.000Z"}\n`;
    writeFileSync(home.path("daemon/wanted.json"), wanted);
    const result = await home.run(["start"]);
    expect(result.code).toBe(1);
    expect(result.json.error.code).toBe("NOT_READY");
    expect(result.json.error.message).toContain(home.path("packages/standalone/current/berth"));
    expect(result.json.error.message).toContain("0.1.0");
    expect(result.json.error.message).toContain("booting but never listening");
    expect(result.stderr).toContain("booting but never listening");
    expect(await eventually(() => processesOf(home.home).length === 0, 15_000)).toBe(true);
    expect(existsSync(home.path("daemon/app-server.pid"))).toBe(false);
    expect(readFileSync(home.path("daemon/wanted.json"), "utf8")).toBe(wanted);
    // With no wanted state before, none after.
    const fresh = newHome({ settings: { startTimeoutMs: 800 } });
    installRelease(fresh.home, "0.1.0", `#!/bin/sh\nexec sleep 600\n`);
    expect((await fresh.run(["start"])).json.error.code).toBe("NOT_READY");
    expect(existsSync(fresh.path("daemon/wanted.json"))).toBe(false);
    expect(await eventually(() => processesOf(fresh.home).length === 0, 15_000)).toBe(true);
  });

  test("a server that exits at once: NOT_READY quickly, with its last words", async () => {
    const home = newHome();
    installRelease(home.home, "0.1.0", `#!/bin/sh\necho "fatal: cannot start" >&2\nexit 3\n`);
    const result = await home.run(["start"]);
    expect(result.json.error.code).toBe("NOT_READY");
    expect(result.json.error.message).toContain("fatal: cannot start");
    expect(existsSync(home.path("daemon/app-server.pid"))).toBe(false);
  });

  test("the server SIGKILLed: version says NOT_RUNNING, start cleans the stale record and socket", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    // Without its keeper (which would restart it: spec "Supervision"), so that `start` meets the stale record.
    await killKeeper(home);
    process.kill(started.json.pid, "SIGKILL");
    expect(await eventually(() => !isAlive(started.json.pid))).toBe(true);
    expect(existsSync(home.path("daemon/app-server.sock"))).toBe(true);
    const version = await home.run(["version"]);
    expect(version.json.error.code).toBe("NOT_RUNNING");
    const restarted = await home.run(["start"]);
    expect(restarted.json.status).toBe("started");
    expect(restarted.json.pid).not.toBe(started.json.pid);
    expect(readJson(home.path("daemon/app-server.pid")).pid).toBe(restarted.json.pid);
  });

  test("a server whose record was lost is adopted, then stopped normally", async () => {
    const home = newHome();
    const started = await home.run(["start"]);
    // Without its keeper, which adopts a recordless server on its own tick and would race this test's `start`.
    await killKeeper(home);
    const { rmSync } = await import("node:fs");
    rmSync(home.path("daemon/app-server.pid"));
    const again = await home.run(["start"]);
    expect(again.json).toMatchObject({ status: "alreadyRunning", backend: "pid", pid: started.json.pid });
    expect(again.json.warnings?.[0]).toContain("adopted");
    expect(readJson(home.path("daemon/app-server.pid")).pid).toBe(started.json.pid);
    rmSync(home.path("daemon/app-server.pid"));
    const stopped = await home.run(["stop"]);
    expect(stopped.json.status).toBe("stopped");
    expect(isAlive(started.json.pid)).toBe(false);
  });

  test("something else answering on the socket: NOT_MANAGED for stop and restart, alreadyRunning/null for start", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { mode: 0o700 });
    const socket = home.path("daemon/app-server.sock");
    const foreign = Bun.serve({ unix: socket, fetch: () => new Response("not berth") });
    // stop records its wish from the start (in the background) and must put it back when it fails.
    const wanted = `{"appServer":"running","since":"2020-01-01T00:00:00.000Z"}\n`;
    writeFileSync(home.path("daemon/wanted.json"), wanted);
    try {
      const stop = await home.run(["stop"]);
      expect(stop.code).toBe(1);
      expect(stop.json.error.code).toBe("NOT_MANAGED");
      expect(readFileSync(home.path("daemon/wanted.json"), "utf8")).toBe(wanted);
      expect((await home.run(["restart"])).json.error.code).toBe("NOT_MANAGED");
      const start = await home.run(["start"]);
      expect(start.json).toMatchObject({ status: "alreadyRunning", backend: null });
      expect(existsSync(socket)).toBe(true);
      expect(await (await fetch("http://localhost/", { unix: socket })).text()).toBe("not berth");
      expect((await home.run(["status"])).json.status).toBe("unmanaged");
    } finally {
      foreign.stop(true);
    }
  });

  test("a leftover socket file nobody answers on is removed before a start", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { mode: 0o700 });
    writeFileSync(home.path("daemon/app-server.sock"), "");
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
  });
});

describe("bad input loses nothing", () => {
  test("a corrupt pidfile is moved aside and reported; start proceeds", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { mode: 0o700 });
    writeFileSync(home.path("daemon/app-server.pid"), "garbage{");
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    expect(started.json.warnings.join(" ")).toContain("moved it to");
    const aside = readdirSync(home.path("daemon")).filter((name) => name.startsWith("app-server.pid.corrupt-"));
    expect(aside).toHaveLength(1);
    expect(readFileSync(home.path("daemon", aside[0] as string), "utf8")).toBe("garbage{");
  });

  test("corrupt settings: STATE_CORRUPT naming the file, which is left untouched", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { mode: 0o700 });
    const settings = home.path("daemon/settings.json");
    writeFileSync(settings, '{"remoteControlEnabled": tru');
    for (const command of ["start", "restart"]) {
      const result = await home.run([command]);
      expect(result.code).toBe(1);
      expect(result.json.error.code).toBe("STATE_CORRUPT");
      expect(result.json.error.message).toContain(settings);
    }
    // Stopping needs no settings beyond defaults (issue 8 item 9): it proceeds and says why in a warning.
    const stop = await home.run(["stop"]);
    expect(stop.json.status).toBe("notRunning");
    expect(stop.json.warnings.join(" ")).toContain(settings);
    expect(readFileSync(settings, "utf8")).toBe('{"remoteControlEnabled": tru');
    const status = await home.run(["status"]);
    expect(status.code).toBe(0);
    expect(status.json.problems.join(" ")).toContain(settings);
  });

  test("a settings value of the wrong type is STATE_CORRUPT too", async () => {
    const home = newHome({ settings: { startTimeoutMs: "soon" } });
    const result = await home.run(["start"]);
    expect(result.json.error.code).toBe("STATE_CORRUPT");
    expect(result.json.error.message).toContain("startTimeoutMs");
  });

  test("missing managed binary: NOT_INSTALLED saying how to install; nothing created", async () => {
    const home = newHome({ install: false });
    const result = await home.run(["start"]);
    expect(result.code).toBe(1);
    expect(result.json.error.code).toBe("NOT_INSTALLED");
    expect(result.json.error.message).toContain("install.sh");
    expect(existsSync(home.path("daemon"))).toBe(false);
    expect((await home.run(["status"])).json).toMatchObject({ status: "stopped", installed: false });
  });

  test("a state folder writable by others, or owned by someone else: UNSAFE_STATE, no repair", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { mode: 0o700 });
    chmodSync(home.path("daemon"), 0o777);
    const open = await home.run(["start"]);
    expect(open.json.error.code).toBe("UNSAFE_STATE");
    expect(open.json.error.message).toContain("chmod 700");
    expect(statSync(home.path("daemon")).mode & 0o777).toBe(0o777);
    chmodSync(home.path("daemon"), 0o700);
    chownSync(home.path("daemon"), 12345, 12345);
    const foreign = await home.run(["start"]);
    expect(foreign.json.error.code).toBe("UNSAFE_STATE");
    expect(foreign.json.error.message).toContain("owned by uid 12345");
    chownSync(home.path("daemon"), process.getuid?.() ?? 0, process.getgid?.() ?? 0);
  });

  test("a BERTH_HOME too long for a socket path uses the short per-user fallback folder", async () => {
    const base = newHome({ install: false });
    const longHome = join(base.home, "x".repeat(60), "y".repeat(40));
    mkdirSync(longHome, { recursive: true, mode: 0o700 });
    installRelease(longHome);
    const env = { ...base.env, BERTH_HOME: longHome };
    const expected = socketPlan({ home: longHome, platform: "linux", uid: process.getuid?.() ?? 0, runtimeDir: undefined });
    expect(expected.fallbackDir).toBeDefined();
    const started = await base.run(["start"], { env: { BERTH_HOME: longHome, XDG_RUNTIME_DIR: "" } });
    try {
      expect(started.json.status).toBe("started");
      expect(started.json.socketPath).toBe(expected.path);
      expect(statSync(expected.fallbackDir as string).mode & 0o777).toBe(0o700);
      expect((await base.exec([BUN, join(import.meta.dir, "../src/main.ts"), "version"], { env })).json.status).toBe("running");
      expect((await base.run(["stop"], { env: { BERTH_HOME: longHome } })).json.status).toBe("stopped");
    } finally {
      const { killProcessesOf } = await import("./helpers/berth.ts");
      killProcessesOf(longHome);
      const { rmSync } = await import("node:fs");
      rmSync(expected.fallbackDir as string, { recursive: true, force: true });
    }
  });
});
