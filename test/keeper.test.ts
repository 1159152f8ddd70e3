/**
 * The keeper inside `update-loop`: real app-servers launched from source,
 * killed with real signals, a real daemon.lock held by another process.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync, rmSync } from "node:fs";
import { appServerState, CRASH_WINDOW_MS, restartDecision } from "../src/daemon/keeper.ts";
import { probeInitialize } from "../src/server/client.ts";
import { eventually, homesPerTest, installRelease, isAlive, readJson, serversOf, type TestHome, QUIET_WINDOW_MS } from "./helpers/berth.ts";
import { holdLock } from "./helpers/holder.ts";


const newHome = homesPerTest(afterEach);


async function answeringPid(home: TestHome): Promise<number | undefined> {
  const probe = await probeInitialize(home.path("daemon/app-server.sock"), 1_000);
  return probe.kind === "berth" ? probe.info.pid : undefined;
}

async function bootstrapKeeper(home: TestHome) {
  const result = await home.run(["bootstrap", "--no-auto-update"]);
  expect(result.json.status).toBe("bootstrapped");
  expect(typeof result.json.updater.pid).toBe("number");
  const json = result.json as { pid: number; updater: { pid: number } };
  // The keeper is watching before a test kills anything.
  expect(await eventually(() => {
    try {
      return readFileSync(home.path("daemon/updater.log"), "utf8").includes(`watching app-server pid ${json.pid}`);
    } catch {
      return false;
    }
  }, 20_000)).toBe(true);
  return json;
}

describe("restart decision", () => {
  const t0 = 1_000_000_000;
  const cases: Array<{ crashes: number[]; now: number; out: ReturnType<typeof restartDecision> }> = [
    { crashes: [t0], now: t0, out: { action: "restart", delayMs: 0 } },
    { crashes: [t0, t0 + 10], now: t0 + 10, out: { action: "restart", delayMs: 1_000 } },
    { crashes: [t0, t0 + 1, t0 + 2], now: t0 + 2, out: { action: "restart", delayMs: 2_000 } },
    { crashes: [t0, t0 + 1, t0 + 2, t0 + 3], now: t0 + 3, out: { action: "restart", delayMs: 4_000 } },
    { crashes: [t0, t0 + 1, t0 + 2, t0 + 3, t0 + 4], now: t0 + 4, out: { action: "giveUp" } },
    // old crashes fall out of the 10-minute window: counted afresh
    { crashes: [t0, t0 + 1, t0 + 2, t0 + 3, t0 + CRASH_WINDOW_MS + 5], now: t0 + CRASH_WINDOW_MS + 5, out: { action: "restart", delayMs: 0 } },
    { crashes: [t0, t0 + 1, t0 + 2, t0 + 3, t0 + CRASH_WINDOW_MS - 1], now: t0 + CRASH_WINDOW_MS - 1, out: { action: "giveUp" } },
  ];
  for (const { crashes, now, out } of cases) {
    test(`${crashes.length} crashes → ${JSON.stringify(out)}`, () => expect(restartDecision(crashes, now)).toEqual(out));
  }
  test("backoff is capped at 60 s", () => {
    // Only reachable with a longer window; the cap is part of the formula.
    const decision = restartDecision([1, 2, 3, 4], 4);
    expect(decision).toEqual({ action: "restart", delayMs: 4_000 });
  });
});

describe("status state", () => {
  const cases = [
    { input: { pid: "running", answer: "ours", wanted: "running" }, out: "running" },
    { input: { pid: "starting", answer: "none", wanted: "stopped" }, out: "starting" },
    { input: { pid: "missing", answer: "none", wanted: "stopped" }, out: "stopped" },
    { input: { pid: "missing", answer: "none", wanted: "running" }, out: "crashed" },
    { input: { pid: "missing", answer: "none", wanted: "running", keeper: "crashed" }, out: "crashed" },
    { input: { pid: "missing", answer: "none", wanted: "running", keeper: "failed" }, out: "failed" },
    { input: { pid: "missing", answer: "none", wanted: "stopped", keeper: "failed" }, out: "stopped" },
    { input: { pid: "missing", answer: "foreign", wanted: "running" }, out: "unmanaged" },
    { input: { pid: "missing", answer: "ours", wanted: "stopped" }, out: "unmanaged" },
  ] as const;
  for (const { input, out } of cases) {
    test(`${JSON.stringify(input)} → ${out}`, () => expect(appServerState(input)).toBe(out));
  }
});

describe("keeper", () => {
  test("SIGKILL of the app-server: status says crashed while a command holds the lock, then it answers again", async () => {
    const home = newHome();
    const boot = await bootstrapKeeper(home);
    // A user command holds daemon.lock: the keeper must wait for it.
    const holder = await holdLock(home.path("daemon/daemon.lock"));
    try {
      process.kill(boot.pid, "SIGKILL");
      expect(await eventually(() => !isAlive(boot.pid))).toBe(true);
      const status = await home.run(["status"]);
      expect(status.json.appServer.state).toBe("crashed");
      expect(status.json.appServer.wanted).toBe("running");
    } finally {
      await holder.kill();
    }
    expect(await eventually(async () => ((await answeringPid(home)) ?? boot.pid) !== boot.pid, 20_000)).toBe(true);
    const after = await home.run(["status"]);
    expect(after.json.appServer.state).toBe("running");
    expect(after.json.appServer.restarts).toBe(1);
    expect(after.json.appServer.lastExit).toMatchObject({ exitCode: null, signal: null });
    expect(typeof after.json.appServer.lastExit.at).toBe("string");
    expect(readFileSync(home.path("daemon/updater.log"), "utf8")).toContain(`app-server pid ${boot.pid} exited unasked`);
  }, 60_000);

  test("first crash: restarted at once, answers again quickly (measured)", async () => {
    const home = newHome();
    const boot = await bootstrapKeeper(home);
    const killedAt = Date.now();
    process.kill(boot.pid, "SIGKILL");
    let newPid: number | undefined;
    expect(await eventually(async () => {
      newPid = await answeringPid(home);
      return newPid !== undefined && newPid !== boot.pid;
    }, 20_000, 10)).toBe(true);
    const answeredMs = Date.now() - killedAt;
    console.error(`keeper: app-server answered again ${answeredMs} ms after SIGKILL`);
    expect(serversOf(home)).toEqual([newPid as number]);
  }, 60_000);

  test("a second crash waits its backoff and counts once: each exit is one crash", async () => {
    const home = newHome();
    const boot = await bootstrapKeeper(home);
    let pid = boot.pid;
    for (const crash of [1, 2]) {
      process.kill(pid, "SIGKILL");
      let next: number | undefined;
      expect(await eventually(async () => {
        next = await answeringPid(home);
        return next !== undefined && next !== pid;
      }, 20_000, 10)).toBe(true);
      pid = next as number;
      // The keeper has recorded this restart (so it watches the new server) before the next kill.
      expect(await eventually(() => readJson(home.path("daemon/keeper.json")).restarts === crash)).toBe(true);
      expect(readJson(home.path("daemon/keeper.json")).crashes.length).toBe(crash);
    }
    const status = (await home.run(["status"])).json.appServer;
    expect(status).toMatchObject({ state: "running", restarts: 2 });
    // The second server was launched by a keeper step that has ended since: no process of berth is its
    // parent any more (the loop is a shell), so how it ended is unknown, as for a server `start` launched.
    // A server that dies while its launching step waits for it is reported (the crash-at-once test below).
    expect(status.lastExit).toMatchObject({ exitCode: null, signal: null });
    expect(readJson(home.path("daemon/keeper.json")).crashes.length).toBe(2);
    expect(serversOf(home)).toEqual([pid]);
  }, 60_000);

  test("a binary that crashes at once: failed after 5 crashes, log tail in status; start resets it", async () => {
    const home = newHome();
    const boot = await bootstrapKeeper(home);
    // The next release cannot start: every restart crashes at once.
    installRelease(home.home, "0.2.0", "#!/bin/sh\necho 'fatal: cannot open the database' >&2\nexit 3\n");
    process.kill(boot.pid, "SIGKILL");
    expect(await eventually(async () => (await home.run(["status"])).json.appServer.state === "failed", 40_000, 200)).toBe(true);
    const status = await home.run(["status"]);
    expect(status.json.appServer.lastExit.logTail).toContain("fatal: cannot open the database");
    expect(status.json.appServer.lastExit).toMatchObject({ exitCode: 3, signal: null });
    expect(readJson(home.path("daemon/keeper.json")).crashes.length).toBe(5);
    const log = readFileSync(home.path("daemon/updater.log"), "utf8");
    expect(log).toContain("giving up");
    // It stays given up: no more attempts.
    const lines = log.split("\n").length;
    await Bun.sleep(QUIET_WINDOW_MS);
    expect(readFileSync(home.path("daemon/updater.log"), "utf8").split("\n").length).toBe(lines);
    // Fixed release + start: running again, no longer failed.
    installRelease(home.home, "0.3.0");
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    expect(await eventually(async () => (await home.run(["status"])).json.appServer.state === "running")).toBe(true);
  }, 90_000);

  test("the managed binary gone: restarts fail like crashes, the keeper gives up instead of looping", async () => {
    const home = newHome();
    const boot = await bootstrapKeeper(home);
    rmSync(home.path("packages/standalone/current"));
    process.kill(boot.pid, "SIGKILL");
    expect(await eventually(() => readJson(home.path("daemon/keeper.json")).state === "failed", 30_000)).toBe(true);
    const keeperLines = readFileSync(home.path("daemon/updater.log"), "utf8").split("\n").filter((line) => line.includes("keeper:"));
    expect(keeperLines.filter((line) => line.includes("is missing")).length).toBe(4);
    expect(keeperLines.length).toBeLessThan(10);
  }, 60_000);

  test("stop while the keeper is in backoff: stays stopped", async () => {
    const home = newHome();
    const boot = await bootstrapKeeper(home);
    installRelease(home.home, "0.2.0", "#!/bin/sh\necho crash >&2\nexit 3\n");
    process.kill(boot.pid, "SIGKILL");
    // Wait for a crash with a pending backoff (second crash: restart in 1 s).
    expect(await eventually(() => {
      try {
        return readJson(home.path("daemon/keeper.json")).crashes.length >= 2;
      } catch {
        return false;
      }
    }, 20_000)).toBe(true);
    const stopped = await home.run(["stop"]);
    expect(stopped.json.status).toBe("notRunning");
    installRelease(home.home, "0.3.0");
    const crashes = readJson(home.path("daemon/keeper.json")).crashes.length;
    await Bun.sleep(QUIET_WINDOW_MS + 3_500 /* past the 2 s and 4 s backoffs too */);
    expect(serversOf(home)).toEqual([]);
    expect(readJson(home.path("daemon/keeper.json")).crashes.length).toBe(crashes);
    const status = await home.run(["status"]);
    expect(status.json.appServer.state).toBe("stopped");
    expect(status.json.updater.state).toBe("running");
  }, 60_000);

  test("the keeper and 20 racing start/stop/restart: never two app-servers; the last command wins", async () => {
    const home = newHome();
    await bootstrapKeeper(home);
    let maxServers = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        maxServers = Math.max(maxServers, serversOf(home).length);
        await Bun.sleep(20);
      }
    })();
    let killing = true;
    const killer = (async () => {
      while (killing) {
        await Bun.sleep(400);
        for (const pid of serversOf(home)) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // gone
          }
        }
      }
    })();
    const verbs = ["start", "stop", "restart"];
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => home.run([verbs[i % 3] as string])));
    killing = false;
    await killer;
    for (const result of results) {
      // A kill between start and readiness is a fair NOT_READY; nothing else.
      if (result.code !== 0) expect(["NOT_READY", "START_FAILED"]).toContain(result.json.error.code);
    }
    // The last command decides.
    expect((await home.run(["stop"])).code).toBe(0);
    await Bun.sleep(QUIET_WINDOW_MS);
    expect(serversOf(home)).toEqual([]);
    expect((await home.run(["start"])).code).toBe(0);
    await Bun.sleep(QUIET_WINDOW_MS);
    expect(serversOf(home).length).toBe(1);
    sampling = false;
    await sampler;
    expect(maxServers).toBeLessThanOrEqual(1);
  }, 180_000);
});
