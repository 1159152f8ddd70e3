/**
 * State files made hostile under a running berth: a FIFO (which blocks any
 * reader that opens it) or a symlink (to /dev/zero, which never ends) where a
 * state file belongs. Real files, real commands, real loops.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { KEEPER_SCRIPT } from "../src/update/keeper-sh.ts";
import { eventually, homesPerTest, isAlive, loopBinaryOf, readJson, type TestHome } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);
const SLOW_TEST_MS = 120_000;
/**
 * A command that reads a state file must answer well within this (a blocked one is killed then, and a FIFO blocks
 * for ever); enable-remote-control restarts a server from source, which a loaded machine may take seconds for.
 */
const COMMAND_WAIT_MS = 30_000;
/** The sh loop reacts within a tick (0.5 s); this leaves room for a loaded machine. */
const LOOP_WAIT_MS = 20_000;

function mkfifo(path: string): void {
  rmSync(path, { force: true });
  expect(spawnSync("mkfifo", [path]).status).toBe(0);
}

/** What may sit where a state file belongs: a FIFO blocks whoever opens it; /dev/zero never ends. */
const HOSTILE: [string, (path: string) => void][] = [
  ["a FIFO", mkfifo],
  ["a symlink to /dev/zero", (path) => {
    rmSync(path, { force: true });
    symlinkSync("/dev/zero", path);
  }],
];

/** A fresh home with `file` made hostile by `make`: `status` answers at once and lists it among its problems. */
async function statusNamesHostile(file: string, make: (path: string) => void): Promise<TestHome> {
  const home = newHome();
  mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
  make(home.path(file));
  const status = await home.run(["status"], { timeoutMs: COMMAND_WAIT_MS });
  expect(status.code).toBe(0);
  expect(status.json.problems.join("\n")).toContain(`${home.path(file)} is a`);
  return home;
}

describe("wanted.json", () => {
  for (const [what, make] of HOSTILE) {
    test(`as ${what}: status and doctor answer at once, naming the file; stop puts a plain file there`, async () => {
      const home = await statusNamesHostile("daemon/wanted.json", make);
      // It answers by itself (a hang is killed at the deadline and leaves no JSON); this bare home is not installed.
      const doctor = await home.run(["doctor"], { timeoutMs: COMMAND_WAIT_MS });
      expect(doctor.json.status).toBe("problems");
      // The wish is written by rename: what was there is replaced, not followed or opened.
      const stop = await home.run(["stop"], { timeoutMs: COMMAND_WAIT_MS });
      expect(stop.json.status).toBe("notRunning");
      expect(lstatSync(home.path("daemon/wanted.json")).isFile()).toBe(true);
      expect(readJson(home.path("daemon/wanted.json")).appServer).toBe("stopped");
    }, SLOW_TEST_MS);
  }
});

describe("keeper.json", () => {
  for (const [what, make] of HOSTILE) {
    test(`as ${what}: status answers at once, naming the file`, async () => {
      await statusNamesHostile("daemon/keeper.json", make);
    }, SLOW_TEST_MS);
  }

  test("JSON that is not an object (null, a number) is damaged history, not an error", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
    for (const text of ["null\n", "7\n", '"running"\n']) {
      writeFileSync(home.path("daemon/keeper.json"), text);
      const status = await home.run(["status"], { timeoutMs: COMMAND_WAIT_MS });
      expect(status.json.problems ?? []).toEqual([]);
      expect(status.json.appServer).toMatchObject({ state: "stopped", restarts: 0 });
    }
    // An object is history, kept.
    writeFileSync(home.path("daemon/keeper.json"), '{"state":"failed","restarts":3,"crashes":[]}\n');
    expect((await home.run(["status"], { timeoutMs: COMMAND_WAIT_MS })).json.appServer).toMatchObject({ restarts: 3 });
  }, SLOW_TEST_MS);
});

describe("startup.json", () => {
  for (const [what, make] of HOSTILE) {
    test(`as ${what}: startup --disable and doctor answer at once, naming the file`, async () => {
      const home = newHome();
      mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
      make(home.path("daemon/startup.json"));
      const disable = await home.run(["startup", "--disable"], { timeoutMs: COMMAND_WAIT_MS });
      expect(disable.code).toBe(1);
      expect(disable.json.error.code).toBe("UNSAFE_STATE");
      expect(disable.json.error.message).toContain(home.path("daemon/startup.json"));
      const doctor = await home.run(["doctor"], { timeoutMs: COMMAND_WAIT_MS });
      const startup = (doctor.json.findings as { check: string; ok: boolean; message: string }[]).find((f) => f.check === "startup");
      expect(startup?.ok).toBe(false);
      expect(startup?.message).toContain(home.path("daemon/startup.json"));
    }, SLOW_TEST_MS);
  }
});

describe("remote-control.listen", () => {
  for (const [what, make] of HOSTILE) {
    test(`as ${what}: remote control still starts on a fresh port, and a plain file replaces it`, async () => {
      const home = newHome();
      expect((await home.run(["start"])).code).toBe(0);
      make(home.path("daemon/remote-control.listen"));
      const enabled = await home.run(["enable-remote-control"], { timeoutMs: COMMAND_WAIT_MS });
      expect(enabled.code).toBe(0);
      const url = enabled.json.remoteControl.url as string;
      expect(url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/$/);
      expect(lstatSync(home.path("daemon/remote-control.listen")).isFile()).toBe(true);
      expect(readJson(home.path("daemon/remote-control.listen"))).toEqual({ listen: url.slice("ws://".length, -1) });
    }, SLOW_TEST_MS);
  }
});

/** Bootstraps (keeper only) and waits until the keeper is the sh loop; the loop's pid. */
async function shLoop(home: TestHome): Promise<number> {
  const result = await home.run(["bootstrap", "--no-auto-update"]);
  expect(result.json.status).toBe("bootstrapped");
  const keeper = (result.json as { updater: { pid: number } }).updater.pid;
  expect(await eventually(() => loopBinaryOf(keeper) !== undefined, LOOP_WAIT_MS)).toBe(true);
  return keeper;
}

/** The token of the last keeper step the loop launched (the step's first line in daemon/keeper-next). */
function lastStepToken(home: TestHome): string | undefined {
  try {
    return readFileSync(home.path("daemon/keeper-next"), "utf8").split(" ")[0];
  } catch {
    return undefined;
  }
}

describe("the sh keeper loop", () => {
  for (const [what, make] of HOSTILE) {
    test(`app-server.pid as ${what}: the loop is not stuck reading it, and runs a step`, async () => {
      const home = newHome();
      await shLoop(home);
      const before = lastStepToken(home);
      make(home.path("daemon/app-server.pid"));
      // The record's line changed (to nothing readable): the loop runs a keeper step, which reports the file.
      expect(await eventually(() => (lastStepToken(home) ?? before) !== before, LOOP_WAIT_MS)).toBe(true);
      expect(await eventually(() => readFileSync(home.path("daemon/updater.log"), "utf8").includes("app-server.pid is a"), LOOP_WAIT_MS)).toBe(true);
    }, SLOW_TEST_MS);
  }

  test("its BERTH_HOME deleted: the loop ends instead of ticking for ever", async () => {
    const home = newHome();
    const keeper = await shLoop(home);
    rmSync(home.home, { recursive: true, force: true });
    expect(existsSync(home.home)).toBe(false);
    expect(await eventually(() => !isAlive(keeper), LOOP_WAIT_MS)).toBe(true);
  }, SLOW_TEST_MS);
});

describe("the sh keeper loop's clock", () => {
  // In a fresh time namespace (a container's) /proc/uptime starts near 0: "0.58" must be 58 cs to `[` and to $(( ))
  // alike, not octal, and "0.08" must not end the loop (dash exits on an invalid number in $(( ))).
  const shells = [["dash"], ["busybox", "sh"]].filter(([tool]) => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0);
  const clock = KEEPER_SCRIPT.match(/\nclock\(\) \{\n[\s\S]*?\n\}\n/)?.[0] ?? "";
  test.each(shells)("%s: centiseconds of /proc/uptime, leading zeros and all", (...shell) => {
    expect(clock).toContain("/proc/uptime");
    const home = newHome();
    const uptime = home.path("uptime");
    const cases: [string, string][] = [["0.08 3.00", "8"], ["0.58 1.00", "58"], ["0.00 0.00", "0"], ["1.09 2.00", "109"], ["22463.77 9.00", "2246377"]];
    for (const [text, cs] of cases) {
      writeFileSync(uptime, `${text}\n`);
      const result = spawnSync(shell[0] as string, [...shell.slice(1), "-c", `set -u\n${clock.replaceAll("/proc/uptime", uptime)}clock\n[ "$now" -ge 0 ]\necho "$((now + 0))"`]);
      expect({ text, out: result.stdout.toString().trim(), err: result.stderr.toString() }).toEqual({ text, out: cs, err: "" });
    }
  });
});
