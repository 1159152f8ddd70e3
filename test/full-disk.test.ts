/**
 * A full disk loses nothing: BERTH_HOME on a real 1 MiB tmpfs, filled by a file that takes every free page.
 * Every command that changes the app-server's state must fail before it acts (naming the file it could not
 * write), with the running server untouched, the wish unchanged and no temp file left behind — a stop or
 * restart that signalled first and then failed to record its wish left the server down, or its keeper
 * starting it again. Needs root (mount); skipped otherwise.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, installRelease, isAlive, keepersOf, makeHome, serversOf, type TestHome } from "./helpers/berth.ts";

/** tmpfs hands out whole pages. */
const PAGE_BYTES = 4096;
const TMPFS_OPTIONS = "size=1m,mode=0700";

/** Whether this machine lets the tests mount a tmpfs (root, and a kernel/container that allows it): tried once. */
function tmpfsMountable(): boolean {
  if (process.platform !== "linux" || process.getuid?.() !== 0 || Bun.which("mount") === null) return false;
  const dir = mkdtempSync(join(tmpdir(), "berth-mount-probe-"));
  try {
    if (Bun.spawnSync(["mount", "-t", "tmpfs", "-o", TMPFS_OPTIONS, "tmpfs", dir], { stderr: "ignore" }).exitCode !== 0) return false;
    Bun.spawnSync(["umount", dir]);
    return true;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const canMount = tmpfsMountable();

const mounted: TestHome[] = [];
afterEach(async () => {
  for (const home of mounted.splice(0)) {
    await home.cleanup().catch(() => {});
    Bun.spawnSync(["umount", "-l", home.home]);
    await home.cleanup();
  }
});

/** A home whose BERTH_HOME is a fresh 1 MiB tmpfs holding a managed release. */
function homeOnTmpfs(): TestHome {
  const home = makeHome({ install: false, prefix: "berth-full-" });
  const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", TMPFS_OPTIONS, "tmpfs", home.home]);
  if (mount.exitCode !== 0) throw new Error(`mount failed: ${mount.stderr.toString()}`);
  mounted.push(home);
  installRelease(home.home);
  return home;
}

/** Takes every free page (dd stops at ENOSPC); then gives `pages` back. */
function fill(home: TestHome, pages = 0): void {
  const filler = home.path("filler");
  Bun.spawnSync(["dd", "if=/dev/zero", `of=${filler}`, "bs=4096"], { stdout: "ignore", stderr: "ignore" });
  const size = Bun.file(filler).size;
  expect(size).toBeGreaterThan(0);
  if (pages > 0) truncateSync(filler, size - pages * PAGE_BYTES);
}

/** Names in daemon/ that a killed or failed writer could leave: temp siblings of state files. */
function tempFiles(home: TestHome): string[] {
  return readdirSync(home.path("daemon")).filter((name) => name.includes(".tmp-"));
}

const wanted = (home: TestHome) => readFileSync(home.path("daemon", "wanted.json"), "utf8");

describe.skipIf(!canMount)("a full disk (BERTH_HOME on a real tmpfs with no page free)", () => {
  test("stop, restart, down, start, enable-remote-control and bootstrap fail before they act; the server runs on", async () => {
    const home = homeOnTmpfs();
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    const pid = started.json.pid as number;
    const wishBefore = wanted(home);
    fill(home);

    for (const args of [["stop"], ["restart"], ["down"], ["start"], ["enable-remote-control"], ["bootstrap"]]) {
      const run = await home.run(args);
      expect({ args, code: run.code, error: run.json?.error?.code }).toEqual({ args, code: 1, error: "UNSAFE_STATE" });
      // Names the file it could not write and says what to do.
      expect(run.json.error.message).toMatch(/cannot use \/\S+\/daemon\/\S+\.json \(ENOSPC\): the disk is full/);
      expect({ args, servers: serversOf(home), alive: isAlive(pid) }).toEqual({ args, servers: [pid], alive: true });
    }
    expect(wanted(home)).toBe(wishBefore);
    expect(tempFiles(home)).toEqual([]);
    const status = await home.run(["status"]);
    expect(status.json.appServer).toMatchObject({ state: "running", pid, answering: true });

    // Space again: the same commands work.
    truncateSync(home.path("filler"), 0);
    const stopped = await home.run(["stop"]);
    expect(stopped.json.status).toBe("stopped");
    expect(serversOf(home)).toEqual([]);
  }, 60_000);

  test("room for the wish but not for the new record: restart fails before its stop", async () => {
    const home = homeOnTmpfs();
    const started = await home.run(["start"]);
    const pid = started.json.pid as number;
    // The keeper writes its state every tick, a page at a time: it would race the restart for the one page.
    for (const keeper of keepersOf(home)) process.kill(-keeper, "SIGKILL");
    expect(await eventually(() => keepersOf(home).length === 0)).toBe(true);
    // One page: the staged wish takes it; the record's room (staged before the stop) finds none.
    fill(home, 1);
    const restart = await home.run(["restart"]);
    expect(restart.json?.error?.message).toMatch(/cannot use \/\S+\/daemon\/app-server\.pid \(ENOSPC\)/);
    expect(serversOf(home)).toEqual([pid]);
    expect(isAlive(pid)).toBe(true);
    expect(tempFiles(home)).toEqual([]);
    // That page is free again, and enough for a stop's wish.
    const stopped = await home.run(["stop"]);
    expect(stopped.json).toMatchObject({ status: "stopped" });
    expect(JSON.parse(wanted(home)).appServer).toBe("stopped");
  }, 60_000);

  test("a start on a full disk spawns nothing and leaves no record", async () => {
    const home = homeOnTmpfs();
    expect((await home.run(["start"])).json.status).toBe("started");
    expect((await home.run(["stop"])).json.status).toBe("stopped");
    fill(home);
    const start = await home.run(["start"]);
    expect(start.json?.error?.code).toBe("UNSAFE_STATE");
    expect(serversOf(home)).toEqual([]);
    expect(readdirSync(home.path("daemon"))).not.toContain("app-server.pid");
    expect(JSON.parse(wanted(home)).appServer).toBe("stopped");
    expect(tempFiles(home)).toEqual([]);
  }, 60_000);
});
