/**
 * Duration settings far past what any timer, date or shell number can hold
 * ("never", written as 1e12 or 1e300): berth starts, answers and keeps the
 * app-server running as with any other value (src/daemon/settings.ts
 * boundDurations; timers past 2^31-1 ms go through src/timers.ts).
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { boundDurations, defaultSettings, DURATION_SETTING_MAX_MS, loadSettings, SCROLLBACK_MAX_BYTES } from "../src/daemon/settings.ts";
import { eventually, homesPerTest, isAlive, type TestHome } from "./helpers/berth.ts";

const SLOW_TEST_MS = 120_000;
/** How long the keeper may take to bring a killed app-server back on a loaded machine. */
const RESTART_WAIT_MS = 20_000;
const newHome = homesPerTest(afterEach);

const HUGE = 1e300;
const EVERY_DURATION_HUGE = {
  startTimeoutMs: HUGE,
  stopGraceMs: HUGE,
  idleTrimAfterMs: HUGE,
  update: { initialDelayMs: HUGE, intervalMs: HUGE, maxRestartDeferMs: HUGE },
  processes: { retainExitedMs: HUGE },
};

describe("boundDurations: every duration setting at most DURATION_SETTING_MAX_MS", () => {
  const dir = mkdtempSync(join(tmpdir(), "berth-huge-settings-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const load = (stored: object) => {
    const path = join(dir, "settings.json");
    writeFileSync(path, JSON.stringify(stored));
    return loadSettings(path, {});
  };

  test("1e300 everywhere: each bounded, the dates and shell numbers made from them valid", () => {
    const settings = load(EVERY_DURATION_HUGE);
    const durations = [
      settings.startTimeoutMs,
      settings.stopGraceMs,
      settings.idleTrimAfterMs,
      settings.update.initialDelayMs,
      settings.update.intervalMs,
      settings.update.maxRestartDeferMs,
      settings.processes.retainExitedMs,
    ];
    expect(durations).toEqual(durations.map(() => DURATION_SETTING_MAX_MS));
    expect(() => new Date(Date.now() + settings.update.initialDelayMs).toISOString()).not.toThrow();
    // What keeperShellArgv hands the sh loop: plain digits, within 64-bit arithmetic.
    expect(String(Math.ceil(settings.startTimeoutMs / 10))).toMatch(/^\d{1,18}$/);
  });

  const table: Array<[string, object, (s: ReturnType<typeof load>) => unknown, unknown]> = [
    ["the defaults are left as they are", {}, (s) => s, boundDurations(defaultSettings())],
    ["a month of retainExitedMs (past setTimeout's limit, well within the bound) is kept", { processes: { retainExitedMs: 2_592_000_000 } }, (s) => s.processes.retainExitedMs, 2_592_000_000],
    ["startTimeoutMs 1e12 is kept", { startTimeoutMs: 1e12 }, (s) => s.startTimeoutMs, 1e12],
    ["exactly the bound is kept", { stopGraceMs: DURATION_SETTING_MAX_MS }, (s) => s.stopGraceMs, DURATION_SETTING_MAX_MS],
    ["one past it is bounded", { stopGraceMs: DURATION_SETTING_MAX_MS + 1 }, (s) => s.stopGraceMs, DURATION_SETTING_MAX_MS],
    ["other keys beside a bounded one are kept", { update: { intervalMs: HUGE }, future: 1 }, (s) => [s.update.initialDelayMs, s.future], [300_000, 1]],
  ];
  for (const [name, stored, pick, expected] of table) test(name, () => expect(pick(load(stored))).toEqual(expected));

  test("a wrong type is still STATE_CORRUPT naming the key, not bounded", () => {
    let error: { code?: string; message?: string } = {};
    try {
      load({ startTimeoutMs: "forever" });
    } catch (caught) {
      error = caught as typeof error;
    }
    expect(error.code).toBe("STATE_CORRUPT");
    expect(error.message).toContain("startTimeoutMs");
  });
});

/** Kills the answering app-server and waits until the keeper has another one answering; returns whether it did. */
async function keeperRestarts(home: TestHome): Promise<boolean> {
  const before = (await home.run(["status"])).json.appServer.pid as number;
  process.kill(before, "SIGKILL");
  return eventually(async () => {
    const app = (await home.run(["status"])).json.appServer;
    return typeof app.pid === "number" && app.pid !== before && app.answering === true;
  }, RESTART_WAIT_MS, 100);
}

describe("a real start and keeper with huge durations", () => {
  const cases: Array<[string, object]> = [
    ["startTimeoutMs 1e12 (past setTimeout's 2^31-1 ms)", { startTimeoutMs: 1e12 }],
    // Alone, so the sh keeper's step deadline (startTimeoutMs in centiseconds) is what is tested.
    ["startTimeoutMs 1e300", { startTimeoutMs: HUGE }],
    ["every duration 1e300", EVERY_DURATION_HUGE],
  ];
  for (const [name, settings] of cases) {
    test(
      `${name}: start answers, and the keeper brings a killed app-server back, twice`,
      async () => {
        const home = newHome({ settings });
        const start = await home.run(["start"]);
        expect(start.json?.status, start.stderr).toBe("started");
        expect(start.json.appServerVersion).toBe("0.1.0");
        const keeper = (await home.run(["status"])).json.updater.pid as number;
        expect(isAlive(keeper)).toBe(true);
        // The first restart runs a keeper step; the second needs the loop to have lived through the first.
        expect(await keeperRestarts(home)).toBe(true);
        expect(await keeperRestarts(home)).toBe(true);
        expect(isAlive(keeper)).toBe(true);
        expect((await home.run(["down"])).json.status).toBe("down");
      },
      SLOW_TEST_MS,
    );
  }
});

describe("counts: processes.scrollbackBytes and processes.max are whole numbers (scrollback at most SCROLLBACK_MAX_BYTES)", () => {
  const dir = mkdtempSync(join(tmpdir(), "berth-count-settings-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const outcome = (processes: object): string => {
    const path = join(dir, "settings.json");
    writeFileSync(path, JSON.stringify({ processes }));
    try {
      return `ok ${JSON.stringify(loadSettings(path, {}).processes)}`;
    } catch (error) {
      return `${(error as { code?: string }).code}: ${(error as Error).message.includes("processes.") ? "names the key" : (error as Error).message}`;
    }
  };
  const table: Array<[object, string]> = [
    [{ scrollbackBytes: 0 }, 'ok {"scrollbackBytes":0,"max":64,"retainExitedMs":86400000}'],
    [{ scrollbackBytes: SCROLLBACK_MAX_BYTES }, `ok {"scrollbackBytes":${SCROLLBACK_MAX_BYTES},"max":64,"retainExitedMs":86400000}`],
    [{ scrollbackBytes: SCROLLBACK_MAX_BYTES + 1 }, "STATE_CORRUPT: names the key"],
    [{ scrollbackBytes: 1e10 }, "STATE_CORRUPT: names the key"],
    [{ scrollbackBytes: 1048576.5 }, "STATE_CORRUPT: names the key"],
    [{ scrollbackBytes: -1 }, "STATE_CORRUPT: names the key"],
    [{ scrollbackBytes: "2MiB" }, "STATE_CORRUPT: names the key"],
    [{ max: 2.5 }, "STATE_CORRUPT: names the key"],
    [{ max: 0 }, 'ok {"scrollbackBytes":2097152,"max":0,"retainExitedMs":86400000}'],
  ];
  for (const [processes, expected] of table) {
    test(`${JSON.stringify(processes)} → ${expected.split(" ")[0]}`, () => expect(outcome(processes)).toBe(expected));
  }

  test("a real start with scrollbackBytes 1e10 is STATE_CORRUPT naming the key, and nothing runs", async () => {
    const home = newHome({ settings: { processes: { scrollbackBytes: 1e10 } } });
    const result = await home.run(["start"]);
    expect(result.json?.error?.code).toBe("STATE_CORRUPT");
    expect(result.json?.error?.message).toContain("processes.scrollbackBytes");
    expect((await home.run(["status"])).json?.appServer?.state).not.toBe("running");
  }, SLOW_TEST_MS);
});
