/**
 * Test harness: a fresh temporary BERTH_HOME per test, a managed "binary" that
 * runs the source with Bun, a way to run berth commands as real processes, and
 * a cleanup that kills every process that ever ran with that BERTH_HOME.
 */
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { processIdentity } from "../../src/platform/process.ts";
import { CLI_TARGET } from "../../src/version.ts";

export const ROOT = join(import.meta.dir, "..", "..");
export const MAIN = join(ROOT, "src", "main.ts");
export const BUN = process.execPath;
export const TARGET = CLI_TARGET ?? "linux-x64";
const COMMAND_TIMEOUT_MS = 90_000;

export type RunResult = { code: number; stdout: string; stderr: string; json: any };

export type TestHome = {
  home: string;
  env: Record<string, string>;
  /** Runs `berth <args>` from source as a separate process. */
  run(args: string[], options?: { env?: Record<string, string>; timeoutMs?: number }): Promise<RunResult>;
  /** Runs a given executable (e.g. the compiled binary) with this home's environment. */
  exec(cmd: string[], options?: { env?: Record<string, string>; timeoutMs?: number }): Promise<RunResult>;
  path(...parts: string[]): string;
  cleanup(): Promise<void>;
};

/** Writes `releases/<version>-<target>/berth` (a launcher script by default) and points `current` at it. */
export function installRelease(home: string, version = "0.1.0", script?: string): string {
  const releaseDir = join(home, "packages", "standalone", "releases", `${version}-${TARGET}`);
  mkdirSync(releaseDir, { recursive: true, mode: 0o700 });
  const binary = join(releaseDir, "berth");
  writeFileSync(binary, script ?? `#!/bin/sh\nBERTH_BUILD_VERSION='${version}' exec '${BUN}' '${MAIN}' "$@"\n`);
  chmodSync(binary, 0o755);
  const current = join(home, "packages", "standalone", "current");
  rmSync(current, { force: true });
  symlinkSync(`releases/${version}-${TARGET}`, current);
  return binary;
}

/**
 * A managed release whose app-server is `fixture` (a misbehaving server under
 * test/fixtures/) while every other command, the keeper's `update-loop`
 * included, is the real berth from source.
 */
export function installFixtureRelease(home: string, fixture: string, version = "0.1.0"): string {
  return installRelease(
    home,
    version,
    `#!/bin/sh\nexport BERTH_BUILD_VERSION='${version}'\nif [ "$1" = serve ]; then exec '${BUN}' '${fixture}' "$@"; fi\nexec '${BUN}' '${MAIN}' "$@"\n`,
  );
}

export function parseLastJsonLine(stdout: string): any {
  const line = stdout.trimEnd().split("\n").pop() ?? "";
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

export async function runProcess(cmd: string[], env: Record<string, string>, timeoutMs = COMMAND_TIMEOUT_MS): Promise<RunResult> {
  const child = Bun.spawn({ cmd, env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr, json: parseLastJsonLine(stdout) };
}

/** The environment of a berth run inside temporary folder `base` (also used by bench/). */
export function berthEnv(base: string, home: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: base,
    BERTH_HOME: home,
    BERTH_INSTALL_DIR: join(base, "bin"),
    NO_COLOR: "1",
  };
}

export function makeHome(options: { version?: string; install?: boolean; settings?: object; prefix?: string } = {}): TestHome {
  const base = mkdtempSync(join(tmpdir(), options.prefix ?? "berth-test-"));
  const home = join(base, "home");
  mkdirSync(home, { mode: 0o700 });
  if (options.install !== false) installRelease(home, options.version ?? "0.1.0");
  if (options.settings) {
    mkdirSync(join(home, "daemon"), { recursive: true, mode: 0o700 });
    writeFileSync(join(home, "daemon", "settings.json"), JSON.stringify(options.settings));
  }
  const env = berthEnv(base, home);
  const exec = (cmd: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}) =>
    runProcess(cmd, { ...env, ...opts.env }, opts.timeoutMs);
  return {
    home,
    env,
    exec,
    run: (args, opts) => exec([BUN, MAIN, ...args], opts),
    path: (...parts) => join(home, ...parts),
    async cleanup() {
      killProcessesOf(home);
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/**
 * Inside an execve (the launcher → Bun → sh chains of every berth daemon) and while it exits, a process shows an
 * empty cmdline and environ for a moment (measured: ~8% of looks at a process that execs in a loop). A scan that
 * sees one looks again, within this long, so a process of the home is never missed for being in the middle of one.
 */
const EXEC_SETTLE_WAIT_MS = 2_000;
/**
 * A look that straddles the start or end of an exec sees one of cmdline and environ empty; a process with an empty
 * environment (`env -i`) always does: after this many scans in a row it is taken as it is.
 */
const HALF_EMPTY_LOOKS = 3;
/** PF_KTHREAD in /proc/<pid>/stat's flags: a kernel thread, which never has a cmdline or environ. */
const PF_KTHREAD = 0x00200000;

export type HomeProcess = { pid: number; ppid: number; argv: string[] };

/** One look at /proc: the home's live processes with their argv; `unsettled` if a process was seen inside an exec. */
function scanProcesses(home: string, halfEmpty: Map<number, number>): { found: HomeProcess[]; unsettled: boolean } {
  const found: HomeProcess[] = [];
  let unsettled = false;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const pid = Number(entry);
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields[0] === "Z" || fields[0] === "X" || (Number(fields[6]) & PF_KTHREAD) !== 0) continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      const environ = readFileSync(`/proc/${entry}/environ`, "utf8");
      if (cmdline === "" && environ === "") {
        unsettled = true;
        continue;
      }
      if (cmdline === "" || environ === "") {
        const looks = (halfEmpty.get(pid) ?? 0) + 1;
        halfEmpty.set(pid, looks);
        if (looks < HALF_EMPTY_LOOKS) {
          unsettled = true;
          continue;
        }
      }
      if (environ.split("\0").includes(`BERTH_HOME=${home}`) || cmdline.includes(home)) found.push({ pid, ppid: Number(fields[1]), argv: cmdline.split("\0") });
    } catch {
      // exited meanwhile
    }
  }
  return { found, unsettled };
}

/** Every live process whose environment names this BERTH_HOME, or whose command line mentions it, with its argv. */
export function homeProcesses(home: string): HomeProcess[] {
  const deadline = Date.now() + EXEC_SETTLE_WAIT_MS;
  const halfEmpty = new Map<number, number>();
  for (;;) {
    const { found, unsettled } = scanProcesses(home, halfEmpty);
    if (!unsettled || Date.now() >= deadline) return found;
    Bun.sleepSync(1);
  }
}

/** The pids of homeProcesses: what a test checks is (not) running for this home. */
export function processesOf(home: string): number[] {
  return homeProcesses(home).map((p) => p.pid);
}

/**
 * Processes of this home whose argv has `word` as one of its arguments. A child forked by one of them shows its
 * parent's argv until it execs (the keeper's sh loop forks for every `sleep` and step; Bun's spawn is a vfork):
 * under load such a look was taken for a second keeper. A match whose parent matches too is that child.
 */
export function processesWithArg(home: string, word: string): number[] {
  const matches = homeProcesses(home).filter((p) => p.argv.includes(word));
  const pids = new Set(matches.map((p) => p.pid));
  return matches.filter((p) => !pids.has(p.ppid)).map((p) => p.pid);
}

/** A live process's argv ([] once it is gone), looked at again while it is inside an exec (EXEC_SETTLE_WAIT_MS). */
export function argvOf(pid: number): string[] {
  const deadline = Date.now() + EXEC_SETTLE_WAIT_MS;
  for (;;) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      if (/\) [ZX] /.test(stat)) return [];
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (cmdline !== "" || Date.now() >= deadline) return cmdline === "" ? [] : cmdline.split("\0");
    } catch {
      return [];
    }
    Bun.sleepSync(1);
  }
}

/** Passes of killProcessesOf: a process started while one pass ran (a keeper step) is found by the next. */
const KILL_PASSES_MAX = 50;

export function killProcessesOf(home: string): void {
  for (let pass = 0; pass < KILL_PASSES_MAX; pass++) {
    const pids = processesOf(home);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    Bun.sleepSync(10); // let the kernel deliver, so the next pass sees zombies, not the living
  }
}

/**
 * Absence (no restart, nothing coming back) can only be observed over a window:
 * longer than the keeper loop's 0.5 s tick and its first 1 s backoff.
 */
export const QUIET_WINDOW_MS = 1_500;

/**
 * eventually's deadline when a test gives none: for something that must happen (a Bun process started from
 * source, a state file a daemon writes), which CI's loaded 2 cores may take seconds for. Only a failing test
 * waits it out; a wait for absence passes its own window.
 */
const EVENTUALLY_DEFAULT_MS = 20_000;

/** Polls a condition until it holds or the deadline passes; returns whether it held. */
export async function eventually(condition: () => boolean | Promise<boolean>, timeoutMs = EVENTUALLY_DEFAULT_MS, pollMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if (await condition()) return true;
    } catch {
      // not yet: a state file a daemon writes may not exist at the first looks
    }
    await Bun.sleep(pollMs);
  }
  // The last look may throw: then the test fails with that error, not a bare `false`.
  return Boolean(await condition());
}

export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

export function readJson(path: string): any {
  return JSON.parse(readFileSync(path, "utf8"));
}

/**
 * Every path under `root` with its type, link target, size, mode and mtime, so
 * a test can assert a failed command left things "exactly as before". `.bun`
 * (Bun's own cache when berth runs from source) is skipped.
 */
export function treeSnapshot(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir).sort()) {
      if (dir === root && entry === ".bun") continue;
      const path = join(dir, entry);
      const stat = lstatSync(path);
      const rel = relative(root, path);
      if (stat.isSymbolicLink()) out.push(`${rel} -> ${readlinkSync(path)}`);
      else if (stat.isDirectory()) {
        out.push(`${rel}/`);
        walk(path);
      } else out.push(`${rel} ${stat.size} ${(stat.mode & 0o777).toString(8)} ${stat.mtimeMs}`);
    }
  };
  walk(root);
  return out;
}

/** App-server processes of this home (the launcher execs, so one process each). */
export function serversOf(home: TestHome): number[] {
  return processesWithArg(home.home, "serve");
}

/**
 * The keeper's sh loop (src/update/keeper-sh.ts) runs as `sh -c SCRIPT update-loop <binary> <version>`:
 * the binary that exec'd it, or undefined while the process is not (yet) that loop.
 */
export function loopBinaryOf(pid: number): string | undefined {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return argv[1] === "-c" && argv[3] === "update-loop" ? argv[4] : undefined;
  } catch {
    return undefined;
  }
}

/** Keeper (`update-loop`) processes of this home. */
export function keepersOf(home: TestHome): number[] {
  return processesWithArg(home.home, "update-loop");
}

/** The process group of a live process (field 5 of /proc/<pid>/stat), undefined once it is gone. */
export function pgrpOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
  } catch {
    return undefined;
  }
}

/**
 * Processes of this home other than the keeper: what `stop` must leave none
 * of (spec "Supervision": the keeper stays running after `stop`). The keeper
 * is its process group: the sh loop and what it runs at that moment (its
 * `sleep`, a `keeper-step`); the app-server has a group of its own.
 */
export function nonKeeperProcessesOf(home: TestHome): number[] {
  const keepers = new Set(keepersOf(home));
  return processesOf(home.home).filter((pid) => !keepers.has(pid) && !keepers.has(pgrpOf(pid) ?? -1));
}

/**
 * Pids a test file's tests started (a negative one is a whole process group): each gets SIGKILL after each test.
 * A process is signalled only if it is still the one seen when its pid was pushed (boot id and start time): one
 * that ended during the test may have left its pid to someone else's process by then.
 */
export function pidsKilledPerTest(afterEach: (fn: () => void) => void): number[] {
  const pids: number[] = [];
  const seen = new Map<number, string | undefined>();
  const push = pids.push.bind(pids);
  pids.push = (...added: number[]) => {
    for (const pid of added) if (pid > 0 && !seen.has(pid)) seen.set(pid, processIdentity(pid));
    return push(...added);
  };
  afterEach(() => {
    for (const pid of pids.splice(0)) {
      if (pid > 0 && (seen.get(pid) === undefined || processIdentity(pid) !== seen.get(pid))) continue; // gone, or not ours now
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    seen.clear();
  });
  return pids;
}

/**
 * Children (Bun.spawn) a test file's tests started: each gets SIGKILL after each test, a timed-out one too. Safer
 * than a pid: Bun knows whether its child has exited (and been reaped), so a reused pid is never signalled.
 */
export function childrenKilledPerTest(afterEach: (fn: () => void) => void): { kill(signal?: number | NodeJS.Signals): void }[] {
  const children: { kill(signal?: number | NodeJS.Signals): void }[] = [];
  afterEach(() => {
    for (const child of children.splice(0)) child.kill("SIGKILL");
  });
  return children;
}

/** `tempDir` for a test file: a fresh folder `<prefix>XXXXXX` in the system's temp folder, removed after each test. */
export function tempDirsPerTest(afterEach: (fn: () => void) => void, prefix: string): () => string {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  return () => {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  };
}

/**
 * `newHome` for a test file: every home it makes is cleaned up (its
 * processes killed, its folder removed) after each test.
 */
export function homesPerTest(afterEach: (fn: () => Promise<void>) => void): (options?: Parameters<typeof makeHome>[0]) => TestHome {
  const homes: TestHome[] = [];
  afterEach(async () => {
    for (const home of homes.splice(0)) await home.cleanup();
  });
  return (options) => {
    const home = makeHome(options);
    homes.push(home);
    return home;
  };
}

/**
 * `start`, then the home's keeper (its whole group) and app-server killed as a reboot would leave them: the state
 * a startup entry (the @reboot line, the unit) starts from. Returns start's JSON.
 */
export async function startThenReboot(home: TestHome, waitMs = EVENTUALLY_DEFAULT_MS): Promise<any> {
  const started = await home.run(["start"]);
  if (started.json?.status !== "started") throw new Error(`start failed: ${started.stdout}${started.stderr}`);
  if (!(await eventually(() => keepersOf(home).length === 1, waitMs))) throw new Error("no keeper came up after start");
  for (const keeper of keepersOf(home)) process.kill(-keeper, "SIGKILL");
  process.kill(started.json.pid, "SIGKILL");
  if (!(await eventually(() => serversOf(home).length === 0 && keepersOf(home).length === 0, waitMs))) throw new Error("the keeper or the app-server outlived SIGKILL");
  return started.json;
}
