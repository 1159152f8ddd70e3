/**
 * Issue 8 item 5: a bootstrap killed between spawning the updater and
 * publishing its record leaves an update-loop no record names. Reproduced as
 * written in the issue, with strace killing bootstrap at its third rename.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { isUpdateLoopOf } from "../src/daemon/orphans.ts";
import { needsOrphanSearch } from "../src/daemon/status.ts";
import { BUN, eventually, keepersOf, MAIN, homesPerTest } from "./helpers/berth.ts";

const SLOW_TEST_MS = 120_000;
const ORPHAN_NAMED_WAIT_MS = 10_000;
const newHome = homesPerTest(afterEach);

/** The update-loops of this home (keepersOf waits out a process caught inside one of its execs). */
const updateLoops = keepersOf;

const hasStrace = spawnSync("sh", ["-c", "command -v strace"]).status === 0;
const ENV = { BERTH_UPDATE_INITIAL_DELAY_MS: "600000" };

/**
 * Reproduced as the issue wrote it: strace SIGKILLs `bootstrap` at its third rename, the updater's publish.
 * Returns the orphaned update-loop once `status` names it, i.e. once it has settled (it execs twice: launcher →
 * Bun → the sh loop, and /proc facts read in the middle of an execve can be missing for an instant).
 */
async function orphanFromKilledBootstrap(home: ReturnType<typeof newHome>): Promise<number> {
  const inject = "inject=rename,renameat,renameat2:signal=SIGKILL:when=3";
  const killed = await home.exec(["strace", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2", "-e", inject, BUN, MAIN, "bootstrap"], { env: ENV });
  expect(killed.code).not.toBe(0);
  let loops: number[] = [];
  expect(await eventually(() => (loops = updateLoops(home)).length > 0, ORPHAN_NAMED_WAIT_MS, 20)).toBe(true);
  const orphan = loops[0] as number;
  expect(orphan).toBeGreaterThan(1);
  expect(readFileSync(home.path("daemon", "updater.pid"), "utf8")).toBe("");
  let problems = "";
  const named = await eventually(async () => {
    problems = ((await home.run(["status"], { env: ENV })).json.problems ?? []).join("\n");
    return problems.includes(`pid ${orphan} runs without a record`);
  }, ORPHAN_NAMED_WAIT_MS, 100);
  expect({ named, problems }).toMatchObject({ named: true });
  return orphan;
}

describe("item 5: an updater whose record was lost is found and ended", () => {
  // strace is what injects the kill at the exact rename; without it the fault cannot be placed.
  test.skipIf(!hasStrace)(
    "strace kills bootstrap at the updater's publish; the next bootstrap leaves exactly one loop, --no-auto-update one keeper",
    async () => {
      const home = newHome();
      const env = ENV;
      const orphan = await orphanFromKilledBootstrap(home);

      const again = await home.run(["bootstrap"], { env });
      expect(again.json.status).toBe("bootstrapped");
      expect(again.json.warnings?.join("\n")).toContain(`ended updater pid ${orphan}`);
      expect(updateLoops(home)).toEqual([again.json.updater.pid]);

      const off = await home.run(["bootstrap", "--no-auto-update"], { env });
      expect(off.json.status).toBe("bootstrapped");
      // Spec "Supervision": the loop is also the keeper and runs whenever the app-server is wanted.
      expect(updateLoops(home)).toEqual([off.json.updater.pid]);
    },
    SLOW_TEST_MS,
  );

  // status trusts a live updater record to mean no other loop runs (needsOrphanSearch): every launch must end
  // the loops no record names first, also the keeper launch of a plain `start`, which used to leave the orphan
  // running beside the new keeper for good.
  // With the app-server down, start searches while the fresh server starts up (searchBeforeKeeperLaunch); with it
  // up, ensureKeeper searches itself.
  test.skipIf(!hasStrace).each([["down"], ["up"]])(
    "strace kills bootstrap at the updater's publish; with the app-server %s, the next `start` ends the orphan before launching its keeper",
    async (server) => {
      const home = newHome();
      const env = ENV;
      const orphan = await orphanFromKilledBootstrap(home);
      // The killed bootstrap had started the app-server before it launched the updater.
      expect((await home.run(["status"], { env })).json.appServer.state).toBe("running");
      if (server === "down") expect((await home.run(["stop"], { env })).code).toBe(0);
      const started = await home.run(["start"], { env });
      expect(started.code).toBe(0);
      expect(started.json.status).toBe(server === "down" ? "started" : "alreadyRunning");
      expect(started.json.warnings?.join("\n")).toContain(`ended updater pid ${orphan}`);
      const status = (await home.run(["status"], { env })).json;
      expect(status.updater.state).toBe("running");
      expect(updateLoops(home)).toEqual([status.updater.pid]);
      expect(status.problems).toBeUndefined();
    },
    SLOW_TEST_MS,
  );

  test("status searches /proc for unrecorded loops only when no live record names the loop (pure)", () => {
    expect(needsOrphanSearch({ state: "running" })).toBe(false);
    expect(needsOrphanSearch({ state: "starting" })).toBe(true);
    expect(needsOrphanSearch({ state: "stopped" })).toBe(true);
    // The updater's record could not be read at all.
    expect(needsOrphanSearch(undefined)).toBe(true);
  });

  test("what counts as an update-loop of this BERTH_HOME (pure)", () => {
    const loop = { pid: 50, uid: 0, argv: ["/h/berth", "update-loop"], berthHome: "/h" };
    expect(isUpdateLoopOf("/h", 0, loop)).toBe(true);
    expect(isUpdateLoopOf("/h", 0, { ...loop, berthHome: "/other" })).toBe(false);
    expect(isUpdateLoopOf("/h", 0, { ...loop, uid: 1000 })).toBe(false);
    expect(isUpdateLoopOf("/h", 0, { ...loop, argv: ["sleep", "1000"] })).toBe(false);
    expect(isUpdateLoopOf("/h", 0, { ...loop, pid: 1 })).toBe(false);
    expect(isUpdateLoopOf("/h", 0, { ...loop, argv: undefined })).toBe(false);
  });
});
