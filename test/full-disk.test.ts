/**
 * A full disk loses nothing: BERTH_HOME on a real 1 MiB tmpfs, filled by a file that takes every free page.
 * Every command that changes the app-server's state must fail before it acts (naming the file it could not
 * write), with the running server untouched, the wish unchanged and no temp file left behind — a stop or
 * restart that signalled first and then failed to record its wish left the server down, or its keeper
 * starting it again. The same holds for the other ways a disk says no: a file system out of inodes (the temp
 * file's creation fails, while `df -h` shows space) and a file-size limit inherited from the parent
 * (`ulimit -f`: EFBIG, as Bun ignores SIGXFSZ); each is UNSAFE_STATE naming the state file (never the temp
 * sibling) and what to check, and doctor names a disk out of inodes. Needs root (mount) except the last;
 * skipped otherwise.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, MAIN, eventually, homesPerTest, installRelease, isAlive, keepersOf, makeHome, runProcess, serversOf, type TestHome } from "./helpers/berth.ts";

/** tmpfs hands out whole pages. */
const PAGE_BYTES = 4096;
const TMPFS_OPTIONS = "size=1m,mode=0700";
/** Out of inodes instead: the release, the state files and the filler all come out of these. */
const TMPFS_INODES_OPTIONS = "size=8m,nr_inodes=64,mode=0700";
/** Far more than that tmpfs has: filling stops at the first ENOSPC. */
const FILLER_FILES_MAX = 1_000;

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

/** A home whose BERTH_HOME is a fresh tmpfs (1 MiB unless `options` say otherwise) holding a managed release. */
function homeOnTmpfs(options = TMPFS_OPTIONS): TestHome {
  const home = makeHome({ install: false, prefix: "berth-full-" });
  const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", options, "tmpfs", home.home]);
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

/** Creates empty files until the file system has no inode left; returns how many it took. */
function takeEveryInode(home: TestHome): number {
  const dir = home.path("filler");
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < FILLER_FILES_MAX; i += 1) {
    try {
      writeFileSync(`${dir}/${i}`, "");
    } catch {
      return i;
    }
  }
  throw new Error(`the tmpfs (${TMPFS_INODES_OPTIONS}) took more than ${FILLER_FILES_MAX} files`);
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
    // The keeper (still running after stop) writes its state now and then; on the full disk its temp file may be
    // seen for an instant between its failed write and its removal: this test is about what `start` leaves.
    for (const keeper of keepersOf(home)) process.kill(-keeper, "SIGKILL");
    expect(await eventually(() => keepersOf(home).length === 0)).toBe(true);
    fill(home);
    const start = await home.run(["start"]);
    expect(start.json?.error?.code).toBe("UNSAFE_STATE");
    expect(serversOf(home)).toEqual([]);
    expect(readdirSync(home.path("daemon"))).not.toContain("app-server.pid");
    expect(JSON.parse(wanted(home)).appServer).toBe("stopped");
    expect(tempFiles(home)).toEqual([]);
  }, 60_000);
});

describe.skipIf(!canMount)("a file system out of inodes (space left)", () => {
  test("stop, restart, down and start fail before they act, naming the state file; doctor names the cause", async () => {
    const home = homeOnTmpfs(TMPFS_INODES_OPTIONS);
    const started = await home.run(["start"]);
    expect(started.json.status).toBe("started");
    const pid = started.json.pid as number;
    // The keeper creates its state files now and then: it would race the commands for an inode freed meanwhile.
    expect(await eventually(() => keepersOf(home).length > 0)).toBe(true);
    for (const keeper of keepersOf(home)) process.kill(-keeper, "SIGKILL");
    expect(await eventually(() => keepersOf(home).length === 0)).toBe(true);
    // Its record, now stale, is removed by the next look (doctor's), which would free an inode: looked at now.
    expect((await home.run(["status"])).json.updater.state).toBe("stopped");
    expect(readdirSync(home.path("daemon"))).not.toContain("updater.pid");
    const wishBefore = readFileSync(home.path("daemon", "wanted.json"), "utf8");
    expect(takeEveryInode(home)).toBeGreaterThan(0);

    for (const args of [["stop"], ["restart"], ["down"], ["start"]]) {
      const run = await home.run(args);
      expect({ args, code: run.code, error: run.json?.error?.code }).toEqual({ args, code: 1, error: "UNSAFE_STATE" });
      // The state file, not the temp sibling whose creation failed; and what to look at, as `df -h` shows space.
      expect({ args, message: run.json.error.message }).toEqual({ args, message: expect.stringMatching(/cannot use \/\S+\/daemon\/wanted\.json \(ENOSPC\): the disk is full \(no space, or no inodes/) });
      expect({ args, alive: isAlive(pid), servers: serversOf(home) }).toEqual({ args, alive: true, servers: [pid] });
    }
    expect(readFileSync(home.path("daemon", "wanted.json"), "utf8")).toBe(wishBefore);
    expect(tempFiles(home)).toEqual([]);

    const doctor = await home.run(["doctor"]);
    expect(doctor.json.findings.find((finding: { check: string }) => finding.check === "disk")).toMatchObject({ ok: false, message: expect.stringContaining("no free inodes") });

    // Inodes again: the same command works.
    rmSync(home.path("filler"), { recursive: true });
    expect((await home.run(["stop"])).json.status).toBe("stopped");
    expect(serversOf(home)).toEqual([]);
  }, 60_000);
});

const newHome = homesPerTest(afterEach);

describe("a file-size limit inherited from the parent (ulimit -f 0)", () => {
  test("start fails before it spawns, as UNSAFE_STATE naming the file and the limit, not INTERNAL", async () => {
    const home = newHome();
    // sh is the parent that set the limit; berth's stdout is a pipe (not limited).
    const run = await runProcess(["sh", "-c", `ulimit -f 0 && exec '${BUN}' '${MAIN}' start`], home.env);
    expect({ code: run.code, error: run.json?.error?.code }).toEqual({ code: 1, error: "UNSAFE_STATE" });
    expect(run.json.error.message).toMatch(/cannot use \/\S+\/daemon\/wanted\.json \(EFBIG\): a file-size limit forbids the write \(see `ulimit -f`\)/);
    expect(run.stderr).not.toContain("    at ");
    expect(serversOf(home)).toEqual([]);
    expect(readdirSync(home.path("daemon")).filter((name) => name === "app-server.pid" || name.includes(".tmp-"))).toEqual([]);
    // Without the limit the same start works.
    expect((await home.run(["start"])).json.status).toBe("started");
    expect((await home.run(["stop"])).json.status).toBe("stopped");
  }, 60_000);
});
