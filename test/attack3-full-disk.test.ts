/**
 * The full-disk handling (stageWrite) against the other ways a disk says "no": a file system out of inodes
 * (ENOSPC from the temp file's creation, while `df -h` shows space) and a file-size limit inherited from the
 * parent (`ulimit -f`: EFBIG, as Bun ignores SIGXFSZ). Each must fail the command before it acts, as
 * UNSAFE_STATE naming the state file (not a temp name the user never sees) and saying what to check; doctor
 * must name a disk out of inodes. The inode cases need root (mount); skipped otherwise.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { BUN, MAIN, eventually, homesPerTest, installRelease, isAlive, keepersOf, makeHome, runProcess, serversOf, type TestHome } from "./helpers/berth.ts";

const TEST_TIMEOUT_MS = 60_000;
/** Inodes of the test's tmpfs: the release, the state files and the filler all come out of these. */
const TMPFS_OPTIONS = "size=8m,nr_inodes=64,mode=0700";
/** Far more than the tmpfs has: filling stops at the first ENOSPC. */
const FILLER_FILES_MAX = 1_000;

const canMount = process.getuid?.() === 0 && process.platform === "linux" && Bun.which("mount") !== null;

const mounted: TestHome[] = [];
afterEach(async () => {
  for (const home of mounted.splice(0)) {
    await home.cleanup().catch(() => {});
    Bun.spawnSync(["umount", "-l", home.home]);
    await home.cleanup();
  }
});

function homeOnTmpfs(): TestHome {
  const home = makeHome({ install: false, prefix: "berth-inodes-" });
  const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", TMPFS_OPTIONS, "tmpfs", home.home]);
  if (mount.exitCode !== 0) throw new Error(`mount failed: ${mount.stderr.toString()}`);
  mounted.push(home);
  installRelease(home.home);
  return home;
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
  throw new Error(`the tmpfs (${TMPFS_OPTIONS}) took more than ${FILLER_FILES_MAX} files`);
}

const tempFiles = (home: TestHome) => readdirSync(home.path("daemon")).filter((name) => name.includes(".tmp-"));

describe.skipIf(!canMount)("a file system out of inodes (space left)", () => {
  test("stop, restart, down and start fail before they act, naming the state file; doctor names the cause", async () => {
    const home = homeOnTmpfs();
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
  }, TEST_TIMEOUT_MS);
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
  }, TEST_TIMEOUT_MS);
});
