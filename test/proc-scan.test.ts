/**
 * The /proc scan that `stop` takes before SIGTERM (listProcesses + treeOf, through TreeSnapshot), on real
 * processes: a child, a grandchild in its own session (found by parent links only), a member of the
 * leader's group reparented away from it (found by the group only), and a zombie (gone, never listed).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openContext } from "../src/daemon/context.ts";
import { cmdlineHasUpdateLoop, findUpdateLoops } from "../src/daemon/orphans.ts";
import { TreeSnapshot } from "../src/daemon/tree.ts";
import { isDigits, isPidEntry, listPids, listProcesses, processEntryIdentity, processIdentity, treeOf } from "../src/platform/process.ts";
import { BUN, ROOT, eventually, pidsKilledPerTest } from "./helpers/berth.ts";

/** How long the shell may take to report every pid it started. */
const PIDS_REPORTED_WAIT_MS = 10_000;

/** Pids to SIGKILL after each test; a negative one is a whole process group. */
const started = pidsKilledPerTest(afterEach);

describe("/proc names and fields (pure)", () => {
  const names: Array<{ name: string; pid: boolean }> = [
    { name: "1", pid: true },
    { name: "4194304", pid: true },
    { name: "self", pid: false },
    { name: "sys", pid: false },
    { name: "thread-self", pid: false },
    { name: "", pid: false },
  ];
  for (const { name, pid } of names) test(`/proc/${name} is ${pid ? "" : "not "}a process`, () => expect(isPidEntry(name)).toBe(pid));

  const texts: Array<{ text: string; digits: boolean }> = [
    { text: "0", digits: true },
    { text: "2090891", digits: true },
    { text: "", digits: false },
    { text: "-1", digits: false },
    { text: "12a", digits: false },
    { text: "1.5", digits: false },
  ];
  for (const { text, digits } of texts) test(`${JSON.stringify(text)} is ${digits ? "" : "not "}all digits`, () => expect(isDigits(text)).toBe(digits));
});

describe("an update-loop's command line, as /proc/<pid>/cmdline holds it (pure)", () => {
  const cases: Array<{ cmdline: string; loop: boolean }> = [
    { cmdline: "/h/berth\0update-loop\0", loop: true },
    { cmdline: "update-loop\0", loop: true },
    // The sh keeper: its script, then $0 = update-loop and its arguments.
    { cmdline: "/bin/sh\0-c\0while :; do sleep 1; done\0update-loop\0/h/berth\0", loop: true },
    // A process that rewrote its arguments may end without the last NUL.
    { cmdline: "/h/berth\0update-loop", loop: true },
    { cmdline: "/h/berth\0update-loops\0", loop: false },
    { cmdline: "/h/berth\0my-update-loop\0", loop: false },
    { cmdline: "grep\0update-loop-x\0", loop: false },
    { cmdline: "", loop: false },
  ];
  for (const { cmdline, loop } of cases) {
    test(JSON.stringify(cmdline), () => expect(cmdlineHasUpdateLoop(cmdline)).toBe(loop));
  }
});

/**
 * A leader in its own session and group (as berth launches the app-server) that starts: a child; through an
 * intermediate shell, a grandchild in a new session; a subshell's background sleep, reparented once the
 * subshell exits (still in the leader's group); then a child of a shell that execs a sleep, which never reaps:
 * `zombie()` kills that child once the exec is done, and it stays a zombie.
 */
async function family(): Promise<{ leader: number; child: number; grandchild: number; reparented: number; zombie: number; zombieParent: number }> {
  const script = [
    "sleep 600 & echo child=$!",
    "sh -c 'setsid sleep 600 & echo grandchild=$!; wait' &",
    "(sleep 600 & echo reparented=$!)",
    "sh -c 'sleep 600 & echo zombie=$!; exec sleep 600' & echo zombieparent=$!",
    "wait",
  ].join("\n");
  const leader = Bun.spawn({ cmd: ["sh", "-c", script], stdin: "ignore", stdout: "pipe", stderr: "ignore", detached: true });
  started.push(leader.pid);
  const pids: Record<string, number> = {};
  const reader = leader.stdout.getReader();
  let text = "";
  const deadline = Date.now() + PIDS_REPORTED_WAIT_MS;
  while (Object.keys(pids).length < 5 && Date.now() < deadline) {
    const chunk = await reader.read();
    if (chunk.done) break;
    text += new TextDecoder().decode(chunk.value);
    for (const [, key, pid] of text.matchAll(/(\w+)=(\d+)/g)) {
      pids[key as string] = Number(pid);
      if (!started.includes(Number(pid))) started.push(Number(pid));
    }
  }
  reader.releaseLock();
  const { child, grandchild, reparented, zombie, zombieparent } = pids;
  if (!child || !grandchild || !reparented || !zombie || !zombieparent) throw new Error(`the shell reported only ${text}`);
  return { leader: leader.pid, child, grandchild, reparented, zombie, zombieParent: zombieparent };
}

/**
 * Makes the family's zombie one. The child may die only after its shell has exec'd the sleep: dash reaps a
 * child that exits before the exec (its SIGCHLD handler calls wait4), so a child that exits on its own (a
 * `sleep 0`) raced the exec and, under CI's load, was reaped and never seen as a zombie.
 */
async function zombie(f: { zombie: number; zombieParent: number }): Promise<void> {
  const execed = () => {
    try {
      return readFileSync(`/proc/${f.zombieParent}/cmdline`, "latin1") === "sleep\u0000600\u0000";
    } catch {
      return false;
    }
  };
  if (!(await eventually(execed, PIDS_REPORTED_WAIT_MS))) throw new Error(`the zombie's parent ${f.zombieParent} never exec'd its sleep`);
  process.kill(f.zombie, "SIGKILL");
}

describe.skipIf(process.platform !== "linux")("the tree snapshot taken before SIGTERM (real processes)", () => {
  test("finds children, a grandchild in its own session and a reparented group member, each with its identity; never a zombie", async () => {
    const f = await family();
    await zombie(f);
    // The reparented sleep has left the leader's children, and the zombie is a zombie: wait until the kernel says so.
    // What was seen last, so a failure says which half never settled.
    let seen: unknown;
    const settled = await eventually(() => {
      try {
        const table = listProcesses();
        const reparented = table.find((entry) => entry.pid === f.reparented);
        const zombie = processEntryIdentity(f.zombie);
        seen = { family: f, reparented, zombie };
        return reparented !== undefined && reparented.ppid !== f.leader && zombie?.zombie === true;
      } catch (error) {
        seen = { family: f, error: String(error) };
        return false;
      }
    }, PIDS_REPORTED_WAIT_MS);
    expect({ settled, seen }).toMatchObject({ settled: true });

    const table = listProcesses();
    expect(table.map((entry) => entry.pid)).not.toContain(f.zombie);
    for (const entry of table.filter((e) => [f.leader, f.child, f.grandchild, f.reparented].includes(e.pid))) {
      expect(entry.identity).toBe(processIdentity(entry.pid) as string);
    }
    const tree = treeOf(f.leader, table).map((entry) => entry.pid);
    expect(tree).toEqual(expect.arrayContaining([f.child, f.grandchild, f.reparented, f.zombieParent]));
    expect(tree).not.toContain(f.leader);
    expect(tree).not.toContain(f.zombie);

    const snapshot = new TreeSnapshot(f.leader, () => processIdentity(f.leader) !== undefined);
    snapshot.scan(true);
    expect(snapshot.alive()).toEqual(expect.arrayContaining([f.child, f.grandchild, f.reparented, f.zombieParent]));
  }, 30_000);

  test("a snapshot of a leader that is not provably ours records nothing", async () => {
    const f = await family();
    const snapshot = new TreeSnapshot(f.leader, () => false);
    snapshot.scan(true);
    expect(snapshot.size).toBe(0);
  }, 30_000);

  test("listPids names exactly the numeric entries of /proc, this process among them", () => {
    const pids = listPids();
    expect(pids).toContain(process.pid);
    expect(pids.every((pid) => Number.isInteger(pid) && pid > 0)).toBe(true);
  });
});

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

describe.skipIf(process.platform !== "linux" || !isRoot)("the orphan search, as root and as another user (real processes)", () => {
  test("each finds the update-loops of this BERTH_HOME run by itself, never another user's", async () => {
    const base = mkdtempSync(join(tmpdir(), "berth-orphans-"));
    const home = join(base, "home");
    mkdirSync(home);
    // The other user must be able to resolve the path (sameHome) and run Bun from the source tree.
    chmodSync(base, 0o755);
    chmodSync(home, 0o755);
    try {
      // `sh -c 'sleep 600; :' update-loop`: a shell whose arguments hold update-loop, with this BERTH_HOME.
      const loop = (asNobody: boolean) => {
        const as = asNobody ? ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups"] : [];
        const child = Bun.spawn({
          cmd: [...as, "sh", "-c", "sleep 600; :", "update-loop"],
          env: { PATH: process.env.PATH ?? "/usr/bin:/bin", BERTH_HOME: home },
          stdin: "ignore",
          stdout: "ignore",
          stderr: "ignore",
          detached: true,
        });
        // Its own group: the shell and its sleep are ended together.
        started.push(-child.pid);
        return child.pid;
      };
      const ours = loop(false);
      const theirs = loop(true);
      // Until setpriv has dropped to nobody and exec'd the shell, the process is root's and names update-loop too.
      const execedAsNobody = () => statSync(`/proc/${theirs}`).uid === NOBODY && readFileSync(`/proc/${theirs}/cmdline`, "utf8").startsWith("sh\0");
      expect(await eventually(execedAsNobody, PIDS_REPORTED_WAIT_MS)).toBe(true);
      const ctx = openContext({ ...process.env, BERTH_HOME: home });
      const seen = () => findUpdateLoops(ctx).map((record) => record.pid);
      expect(await eventually(() => seen().includes(ours), PIDS_REPORTED_WAIT_MS)).toBe(true);
      expect(seen()).not.toContain(theirs);

      const script = `const { findUpdateLoops } = await import(${JSON.stringify(join(ROOT, "src/daemon/orphans.ts"))});
const { openContext } = await import(${JSON.stringify(join(ROOT, "src/daemon/context.ts"))});
console.log(JSON.stringify(findUpdateLoops(openContext()).map((record) => record.pid)));`;
      const asNobody = async () => {
        const run = Bun.spawn({
          cmd: ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", BUN, "-e", script],
          env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: base, BERTH_HOME: home, BUN_INSTALL_CACHE_DIR: join(base, "cache") },
          stdin: "ignore",
          stdout: "pipe",
          stderr: "pipe",
        });
        const [out, err, code] = await Promise.all([new Response(run.stdout).text(), new Response(run.stderr).text(), run.exited]);
        if (code !== 0) throw new Error(`as nobody: exit ${code}: ${err}`);
        return JSON.parse(out) as number[];
      };
      let found: number[] = [];
      expect(await eventually(async () => (found = await asNobody()).includes(theirs), PIDS_REPORTED_WAIT_MS, 100)).toBe(true);
      expect(found).not.toContain(ours);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  }, 30_000);
});
