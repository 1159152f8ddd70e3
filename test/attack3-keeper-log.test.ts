/**
 * SPEC "Logs": every line the keeper writes starts with an ISO-8601 time. The keeper's steps (`keeper-step`,
 * `update-step`, run by its sh loop with stderr on daemon/updater.log) wrote what they said there — the error
 * a failing step ends with (a full disk: "error: cannot use …/keeper-next (ENOSPC)"), a warning — unstamped.
 * A folder where the step's verdict file belongs makes every step fail at its first write, on any machine.
 */
import { afterEach, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { eventually, homesPerTest, keepersOf } from "./helpers/berth.ts";

const TEST_TIMEOUT_MS = 60_000;
const ISO_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /;

const newHome = homesPerTest(afterEach);

test("a keeper step's error lands in the keeper's log stamped like every other line", async () => {
  const home = newHome();
  expect((await home.run(["start"])).json.status).toBe("started");
  const log = home.path("daemon", "updater.log");
  const text = () => (existsSync(log) ? readFileSync(log, "utf8") : "");
  expect(await eventually(() => keepersOf(home).length === 1 && text().includes("watching app-server pid"))).toBe(true);

  const verdict = home.path("daemon", "keeper-next");
  rmSync(verdict, { force: true });
  mkdirSync(verdict);
  // A new pid record: the loop runs a step, which fails writing its verdict.
  expect((await home.run(["restart"])).json.status).toBe("restarted");
  expect(await eventually(() => text().includes("keeper-next (EISDIR)"))).toBe(true);

  const unstamped = text().split("\n").filter((line) => line !== "" && !ISO_LINE.test(line));
  expect(unstamped).toEqual([]);
}, TEST_TIMEOUT_MS);
