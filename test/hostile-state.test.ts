/**
 * State files made hostile under a running berth: a FIFO (which blocks any
 * reader that opens it) or a symlink (to /dev/zero, which never ends) where a
 * state file belongs. Real files, real commands, real loops.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { lstatSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { homesPerTest, readJson } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);
const SLOW_TEST_MS = 60_000;
/** A command that reads a state file must answer well within this (a blocked one is killed then). */
const COMMAND_WAIT_MS = 15_000;

function mkfifo(path: string): void {
  rmSync(path, { force: true });
  expect(spawnSync("mkfifo", [path]).status).toBe(0);
}

describe("wanted.json", () => {
  const hostile: [string, (path: string) => void][] = [
    ["a FIFO", mkfifo],
    ["a symlink to /dev/zero", (path) => {
      rmSync(path, { force: true });
      symlinkSync("/dev/zero", path);
    }],
  ];
  for (const [what, make] of hostile) {
    test(`as ${what}: status and doctor answer at once, naming the file; stop puts a plain file there`, async () => {
      const home = newHome();
      mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
      make(home.path("daemon/wanted.json"));
      const status = await home.run(["status"], { timeoutMs: COMMAND_WAIT_MS });
      expect(status.code).toBe(0);
      expect(status.json.problems.join("\n")).toContain(`${home.path("daemon/wanted.json")} is a`);
      const doctor = await home.run(["doctor"], { timeoutMs: COMMAND_WAIT_MS });
      expect(doctor.json.findings.length).toBeGreaterThan(0);
      // The wish is written by rename: what was there is replaced, not followed or opened.
      const stop = await home.run(["stop"], { timeoutMs: COMMAND_WAIT_MS });
      expect(stop.json.status).toBe("notRunning");
      expect(lstatSync(home.path("daemon/wanted.json")).isFile()).toBe(true);
      expect(readJson(home.path("daemon/wanted.json")).appServer).toBe("stopped");
    }, SLOW_TEST_MS);
  }
});

describe("keeper.json", () => {
  const hostile: [string, (path: string) => void][] = [
    ["a FIFO", mkfifo],
    ["a symlink to /dev/zero", (path) => symlinkSync("/dev/zero", path)],
  ];
  for (const [what, make] of hostile) {
    test(`as ${what}: status answers at once, naming the file`, async () => {
      const home = newHome();
      mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
      make(home.path("daemon/keeper.json"));
      const status = await home.run(["status"], { timeoutMs: COMMAND_WAIT_MS });
      expect(status.code).toBe(0);
      expect(status.json.problems.join("\n")).toContain(`${home.path("daemon/keeper.json")} is a`);
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
