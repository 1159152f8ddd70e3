/**
 * SPEC "Lifecycle rules", Stop: SIGTERM, wait stopGraceMs, SIGKILL, then STOP_TIMEOUT if it still lives 10 s
 * later. A process that outlives its SIGKILL is made for real: the app-server is put into a frozen cgroup
 * (cgroup v1 freezer), where a pending SIGKILL takes effect only once it is thawed — as in a paused container.
 * Needs root and a writable v1 freezer; skipped elsewhere.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { accessSync, constants, existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { STOP_KILL_WAIT_MS } from "../src/daemon/backend.ts";
import { eventually, homesPerTest, isAlive, readJson } from "./helpers/berth.ts";

const FREEZER = "/sys/fs/cgroup/freezer";
const FREEZE_WAIT_MS = 15_000;
const STOP_GRACE_MS = 200;
/** The stop: its grace, STOP_KILL_WAIT_MS, and room for a loaded machine. */
const STOP_TEST_TIMEOUT_MS = STOP_GRACE_MS + STOP_KILL_WAIT_MS + 60_000;

function freezerWritable(): boolean {
  try {
    accessSync(join(FREEZER, "cgroup.procs"), constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

const newHome = homesPerTest(afterEach);
const groups: string[] = [];
afterEach(async () => {
  for (const group of groups.splice(0)) {
    writeFileSync(join(group, "freezer.state"), "THAWED");
    // Thawed, the pending SIGKILL ends what was frozen; the folder can go once it is empty.
    await eventually(() => readFileSync(join(group, "cgroup.procs"), "utf8").trim() === "", 20_000);
    rmdirSync(group);
  }
});

/** Moves `pid` (all its threads) into a new frozen cgroup; returns once the kernel says FROZEN. */
async function freeze(pid: number): Promise<void> {
  const group = join(FREEZER, `berth-test-${process.pid}-${pid}`);
  mkdirSync(group);
  groups.push(group);
  writeFileSync(join(group, "cgroup.procs"), String(pid));
  writeFileSync(join(group, "freezer.state"), "FROZEN");
  expect(await eventually(() => readFileSync(join(group, "freezer.state"), "utf8").trim() === "FROZEN", FREEZE_WAIT_MS)).toBe(true);
}

describe.skipIf(!freezerWritable())("a server that outlives SIGKILL", () => {
  test(
    "stop says STOP_TIMEOUT naming the pid, keeps its record, and still wants it stopped (it dies once it can)",
    async () => {
      const home = newHome({ settings: { stopGraceMs: STOP_GRACE_MS } });
      const started = await home.run(["start"]);
      expect(started.json.status).toBe("started");
      const pid = started.json.pid as number;
      await freeze(pid);

      const stopped = await home.run(["stop"]);
      expect(stopped.code).toBe(1);
      expect(stopped.json.error.code).toBe("STOP_TIMEOUT");
      expect(stopped.json.error.message).toContain(`pid ${pid}`);
      expect(stopped.stdout.trim().split("\n")).toHaveLength(1);
      // Still alive and still ours: the record is kept, so a later stop or status still knows it.
      expect(isAlive(pid)).toBe(true);
      expect(readJson(home.path("daemon/app-server.pid")).pid).toBe(pid);
      // The SIGKILL is pending: once it lands the keeper must not bring back a server the user stopped.
      expect(readJson(home.path("daemon/wanted.json")).appServer).toBe("stopped");

      writeFileSync(join(groups[0] as string, "freezer.state"), "THAWED");
      expect(await eventually(() => !isAlive(pid), 20_000)).toBe(true);
      const again = await home.run(["stop"]);
      expect(again.json).toMatchObject({ status: "notRunning" });
      expect(existsSync(home.path("daemon/app-server.pid"))).toBe(false);
    },
    STOP_TEST_TIMEOUT_MS,
  );

  test(
    "down says STOP_TIMEOUT too, and still wants everything down: the wish is recorded and the keeper stopped",
    async () => {
      const home = newHome({ settings: { stopGraceMs: STOP_GRACE_MS } });
      const started = await home.run(["start"]);
      const pid = started.json.pid as number;
      expect(await eventually(() => existsSync(home.path("daemon/updater.pid")))).toBe(true);
      const keeper = readJson(home.path("daemon/updater.pid")).pid as number;
      await freeze(pid);

      const down = await home.run(["down"]);
      expect(down.code).toBe(1);
      expect(down.json.error.code).toBe("STOP_TIMEOUT");
      expect(readJson(home.path("daemon/wanted.json"))).toMatchObject({ appServer: "stopped", down: true });
      expect(await eventually(() => !isAlive(keeper))).toBe(true);
      expect(isAlive(pid)).toBe(true);
    },
    STOP_TEST_TIMEOUT_MS,
  );
});
