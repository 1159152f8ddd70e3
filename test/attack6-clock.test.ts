/**
 * A wall clock set back (NTP stepping a VM's clock at boot, a user fixing the date) while the keeper waits
 * its backoff (SPEC "Supervision": 1, 2, 4 … 60 s). The retry time is wall-clock ms in keeper.json, so a clock
 * set back by an hour left a crashed app-server down for an hour and the backoff. The test leaves keeper.json
 * exactly as such a jump does (the retry planned "in the future"), with the keeper paused meanwhile.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { MAX_RETRY_DELAY_MS, recentCrashes, retryDueAt } from "../src/daemon/keeper.ts";
import { updateDueInMs } from "../src/update/loop.ts";
import { probeInitialize } from "../src/server/client.ts";
import { eventually, homesPerTest, isAlive, readJson, type TestHome } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);
const TEST_TIMEOUT_MS = 90_000;
const WAIT_MS = 20_000;
const HOUR_MS = 3_600_000;

describe("retry after a clock jump (pure)", () => {
  const now = 1_000_000_000;
  const cases = [
    { name: "planned on this clock", at: now + 2_000, setAt: now - 1_000, out: now + 2_000 },
    { name: "clock set back an hour: the planned 2 s from now", at: now + HOUR_MS + 2_000, setAt: now + HOUR_MS, out: now + 2_000 },
    { name: "clock set forward: due at once", at: now - HOUR_MS, setAt: now - HOUR_MS - 2_000, out: now - HOUR_MS },
    { name: "no plan time (older keeper.json): capped", at: now + HOUR_MS, setAt: undefined, out: now + MAX_RETRY_DELAY_MS },
    { name: "a plan longer than any backoff: capped", at: now + HOUR_MS, setAt: now, out: now + MAX_RETRY_DELAY_MS },
  ];
  for (const { name, at, setAt, out } of cases) test(name, () => expect(retryDueAt(at, setAt, now)).toBe(out));
  test("crash times from the future (before the clock was set back) are forgotten", () => {
    expect(recentCrashes([now - 1_000, now + HOUR_MS, now], now)).toEqual([now - 1_000, now]);
  });
});

describe("update check after a clock jump (pure)", () => {
  const now = 1_000_000_000;
  const cases = [
    { name: "none planned: due now", dueAt: Number.NaN, out: 0 },
    { name: "planned in the past: due now", dueAt: now - 5, out: 0 },
    { name: "planned within the interval: waits", dueAt: now + 1_000, out: 1_000 },
    { name: "planned a whole interval ahead: waits", dueAt: now + HOUR_MS, out: HOUR_MS },
    { name: "planned further than any plan (clock set back): due now", dueAt: now + 24 * HOUR_MS, out: 0 },
  ];
  for (const { name, dueAt, out } of cases) test(name, () => expect(updateDueInMs(dueAt, now, HOUR_MS)).toBe(out));
});

async function answeringPid(home: TestHome): Promise<number | undefined> {
  const probe = await probeInitialize(home.path("daemon/app-server.sock"), 1_000);
  return probe.kind === "berth" ? probe.info.pid : undefined;
}

test.skipIf(process.platform !== "linux")(
  "a crashed app-server whose backoff was planned before the clock was set back an hour is restarted after the backoff, not the hour",
  async () => {
    const home = newHome();
    const boot = await home.run(["bootstrap", "--no-auto-update"]);
    expect(boot.json.status).toBe("bootstrapped");
    const pid = boot.json.pid as number;
    const keeper = boot.json.updater.pid as number;
    const log = () => readFileSync(home.path("daemon/updater.log"), "utf8");
    expect(await eventually(() => log().includes(`watching app-server pid ${pid}`), WAIT_MS)).toBe(true);

    // The keeper's group (its sh loop and its sleep) paused while the scene is set: the crash, counted, and its
    // 2 s backoff planned one hour "ahead", as the clock read then.
    process.kill(-keeper, "SIGSTOP");
    try {
      const record = readJson(home.path("daemon/app-server.pid"));
      process.kill(pid, "SIGKILL");
      expect(await eventually(() => !isAlive(pid))).toBe(true);
      const then = Date.now() + HOUR_MS;
      const state = { state: "crashed", restarts: 0, crashes: [then - 1_000, then], exited: record, retryAt: then + 2_000, retrySetAt: then };
      writeFileSync(home.path("daemon/keeper.json"), `${JSON.stringify(state)}\n`);
    } finally {
      process.kill(-keeper, "SIGCONT");
    }
    const back = await eventually(async () => {
      const now = await answeringPid(home);
      return now !== undefined && now !== pid;
    }, WAIT_MS);
    expect(back).toBe(true);
    const status = await home.run(["status"]);
    expect(status.json.appServer.state).toBe("running");
  },
  TEST_TIMEOUT_MS,
);

/** The update-step's verdict file: `<token> <wake> <version>`; `<token> started` while a step runs. */
function updateStepIdle(home: TestHome): boolean {
  const line = readFileSync(home.path("daemon/update-next"), "utf8").trim().split(" ");
  return line.length === 3 && line[1] !== "started";
}

test.skipIf(process.platform !== "linux")(
  "an update check planned before the clock was set back a day still runs at the next interval, not a day later",
  async () => {
    const home = newHome();
    // Checks every 3 s against a release folder that does not exist: each check fails at once, and says when.
    const env = { BERTH_RELEASE_BASE_URL: `file://${home.path("no-releases")}`, BERTH_UPDATE_INITIAL_DELAY_MS: "1000", BERTH_UPDATE_INTERVAL_MS: "3000" };
    const boot = await home.run(["bootstrap"], { env });
    expect(boot.json.status).toBe("bootstrapped");
    const keeper = boot.json.updater.pid as number;
    const state = () => readJson(home.path("daemon/updater-state.json"));
    expect(await eventually(() => state().lastCheck?.outcome === "failed" && updateStepIdle(home), WAIT_MS)).toBe(true);

    // Between two steps (the keeper paused; a step under way is let finish first), the plan is moved a day
    // ahead, as the clock read then.
    let before: string | undefined;
    expect(await eventually(() => {
      process.kill(-keeper, "SIGSTOP");
      if (updateStepIdle(home)) {
        before = state().lastCheck.at as string;
        writeFileSync(home.path("daemon/updater-state.json"), JSON.stringify({ ...state(), nextRunAt: new Date(Date.now() + 24 * HOUR_MS).toISOString() }));
        return true;
      }
      process.kill(-keeper, "SIGCONT");
      return false;
    }, WAIT_MS)).toBe(true);
    process.kill(-keeper, "SIGCONT");
    expect(await eventually(() => state().lastCheck.at !== before, WAIT_MS)).toBe(true);
  },
  TEST_TIMEOUT_MS,
);

describe("the in-process keeper's wait (macOS, or no /proc) and a clock set back", () => {
  test("a 300 ms wait still ends after about 300 ms when the wall clock jumps back an hour during it", async () => {
    const { untilKeeperEvent } = await import("../src/update/loop.ts");
    const realNow = Date.now;
    const started = performance.now();
    const waited = untilKeeperEvent(300, () => false);
    // The jump, as NTP steps the clock: every later Date.now() is an hour earlier.
    Date.now = () => realNow() - HOUR_MS;
    try {
      const ended = await Promise.race([waited.then(() => true), Bun.sleep(WAIT_MS).then(() => false)]);
      expect(ended).toBe(true);
      expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    } finally {
      Date.now = realNow;
    }
  }, TEST_TIMEOUT_MS);

  test("an event ends the wait at its next look", async () => {
    const { untilKeeperEvent } = await import("../src/update/loop.ts");
    const started = performance.now();
    await untilKeeperEvent(60_000, () => true);
    expect(performance.now() - started).toBeLessThan(WAIT_MS);
  });
});

describe("deadlines of waits and a clock set back during them", () => {
  /** Runs `wait` with Date.now() stepped back an hour right after it began; whether it ended within WAIT_MS. */
  async function endsDespiteJump(wait: () => Promise<unknown>): Promise<boolean> {
    const realNow = Date.now;
    const waited = wait().then(
      () => true,
      () => true,
    );
    Date.now = () => realNow() - HOUR_MS;
    try {
      return await Promise.race([waited, Bun.sleep(WAIT_MS).then(() => false)]);
    } finally {
      Date.now = realNow;
    }
  }

  test("a lock wait (daemon.lock held by another process) still times out after its 300 ms", async () => {
    const home = newHome({ settings: {} });
    const { holdLock } = await import("./helpers/holder.ts");
    const { FileLock } = await import("../src/daemon/lock.ts");
    const holder = await holdLock(home.path("daemon", "daemon.lock"));
    try {
      let error: unknown;
      expect(await endsDespiteJump(() => FileLock.acquire(home.path("daemon", "daemon.lock"), 300).catch((e) => (error = e)))).toBe(true);
      expect((error as { code?: string }).code).toBe("LOCK_TIMEOUT");
    } finally {
      await holder.kill();
    }
  }, TEST_TIMEOUT_MS);

  test("a stop's wait for an exit (waitUntil) still ends after its 300 ms", async () => {
    const { waitUntil } = await import("../src/daemon/backend.ts");
    expect(await endsDespiteJump(() => waitUntil(() => false, 300))).toBe(true);
  }, TEST_TIMEOUT_MS);
});
