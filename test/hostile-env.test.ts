/**
 * berth started by a parent it does not control (a script, `curl … | sh`,
 * cron, a Python daemon, a CI harness): inherited signal dispositions and
 * mask, closed standard descriptors, a low open-files limit, odd umask, PATH,
 * HOME, TMPDIR and locale. Supervisors (systemd, s6, runit) reset all of this
 * before they run a service; berth must cope with it itself.
 *
 * The hostile parent is GNU env(1): `--ignore-signal` and `--block-signal`
 * set exactly what an exec'd program inherits. Most checks go through the
 * compiled binary, as users get it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TEMP_NAME_PATTERN } from "../src/platform/fs.ts";
import { dropBunRuntimeEnv, maskHas, parseSignalState, signalRepairs } from "../src/platform/inherited.ts";
import { parseProcStat } from "../src/platform/process.ts";
import { BUN, MAIN, eventually, homesPerTest, installRelease, isAlive, keepersOf, killProcessesOf, readJson, runProcess, type RunResult, type TestHome } from "./helpers/berth.ts";
import { compiledPerFile } from "./helpers/compiled.ts";
import { connect } from "./helpers/raw-ws.ts";
import { apiClient, call, OutputCollector } from "./helpers/session.ts";

const VERSION = "7.7.7";
const TEST_TIMEOUT_MS = 90_000;
const SERVE_READY_MS = 15_000;
const SERVE_EXIT_MS = 15_000;
/** Short enough that a stop which had to escalate to SIGKILL still finishes well inside the test. */
const STOP_GRACE_MS = 20_000;

/**
 * What a careless parent leaves: SIGCHLD ignored (a Python daemon avoiding
 * zombies), SIGINT and SIGQUIT ignored (a background job of a script), SIGPIPE
 * ignored (Python, Go), and the terminating signals blocked (a harness that
 * reads them from a signalfd and forgot to unblock before exec).
 */
const HOSTILE_PARENT = ["env", "--ignore-signal=CHLD,INT,QUIT,PIPE", "--block-signal=TERM,INT,HUP,USR1"];

/** Linux signal numbers as bits of /proc/<pid>/status SigIgn/SigBlk. */
const bit = (signal: number) => 1n << BigInt(signal - 1);
const SIG = { HUP: 1, INT: 2, QUIT: 3, USR1: 10, PIPE: 13, TERM: 15, CHLD: 17, XFSZ: 25 } as const;
/** Bun ignores these two in its own processes (never in the children it spawns). */
const BUN_OWN_IGNORED = bit(SIG.PIPE) | bit(SIG.XFSZ);

const compiled = compiledPerFile(beforeAll, afterAll, { version: VERSION, prefix: "berth-hostile-" });

beforeAll(() => {
  // Without these options of GNU env the hostile parent cannot be built: fail loudly, never pass by skipping.
  const probe = Bun.spawnSync(["env", "--ignore-signal=CHLD", "--block-signal=TERM", "true"]);
  if (probe.exitCode !== 0) throw new Error("env(1) lacks --ignore-signal/--block-signal (GNU coreutils >= 8.31 needed)");
});

const newHome = homesPerTest(afterEach);
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** A home whose managed binary is the compiled berth. */
function compiledHome(settings: object = { stopGraceMs: STOP_GRACE_MS }): { home: TestHome; binary: string } {
  const home = newHome({ settings });
  const binary = installRelease(home.home, VERSION, "");
  copyFileSync(compiled.berth, binary);
  chmodSync(binary, 0o755);
  return { home, binary };
}

/** SigBlk/SigIgn of a process as numbers, for bit arithmetic. */
function signalState(pid: number | "self") {
  const state = parseSignalState(readFileSync(`/proc/${pid}/status`, "latin1"));
  if (!state) throw new Error(`no SigBlk/SigIgn in /proc/${pid}/status`);
  return { blocked: BigInt(`0x${state.blocked}`), ignored: BigInt(`0x${state.ignored}`) };
}

const NO_SIGNALS = "0000000000000000";

/** A shell line run by sh with `$B` the binary; the shell is the parent, as a script would be. */
function shell(home: TestHome, binary: string, line: string, env: Record<string, string> = {}): Promise<RunResult> {
  return runProcess(["sh", "-c", line], { ...home.env, B: binary, ...env });
}

/** Runs a process through the API; returns how it ended and all it printed (stdout then stderr, or the terminal). */
async function runThroughApi(socket: string, argv: string[], terminal: boolean) {
  const ws = await apiClient(socket);
  try {
    const out = new OutputCollector(ws);
    const { process: p } = await call(ws, "process/spawn", { argv, ...(terminal ? { terminal: { cols: 80, rows: 24 } } : {}) });
    const exit = await out.waitExited(p.processId);
    const text = terminal ? out.text(p.processId, "terminal") : out.text(p.processId, "stdout") + out.text(p.processId, "stderr");
    return { exit, text: text.replaceAll("\r", "") };
  } finally {
    ws.destroy();
  }
}

/**
 * What users' processes must get whatever berth inherited, with pipes and in a
 * terminal: no blocked signal, no ignored one, and a SIGPIPE that kills
 * (`yes | head` ends `yes` with status 141, not a "Broken pipe" error).
 */
async function expectCleanUserProcesses(socket: string): Promise<void> {
  for (const terminal of [false, true]) {
    const own = await runThroughApi(socket, ["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"], terminal);
    expect(own.exit).toEqual({ exitCode: 0, signal: null });
    expect(parseSignalState(own.text)).toEqual({ blocked: NO_SIGNALS, ignored: NO_SIGNALS });
    const pipe = await runThroughApi(socket, ["sh", "-c", '{ yes; echo "yes-status=$?" >&2; } | head -n 1 >/dev/null'], terminal);
    expect(pipe.exit).toEqual({ exitCode: 0, signal: null });
    expect(pipe.text).toContain("yes-status=141");
  }
}

describe("pure: what an inherited signal state needs undone", () => {
  const status = (blocked: string, ignored: string) => `Name:\tx\nSigPnd:\t0000000000000000\nSigBlk:\t${blocked}\nSigIgn:\t${ignored}\nSigCgt:\t0000000000000000\n`;
  const cases: { name: string; text: string; repairs: ReturnType<typeof signalRepairs> | undefined }[] = [
    { name: "a clean Bun process (PIPE and XFSZ ignored by Bun)", text: status("0000000000000000", "0000000001001000"), repairs: { resetChild: false, unblockAll: false } },
    { name: "SIGCHLD ignored", text: status("0000000000000000", "0000000001011000"), repairs: { resetChild: true, unblockAll: false } },
    { name: "TERM, INT, HUP, USR1 blocked", text: status("0000000000004203", "0000000001001000"), repairs: { resetChild: false, unblockAll: true } },
    { name: "only a real-time signal blocked", text: status("8000000000000000", "0000000000000000"), repairs: { resetChild: false, unblockAll: true } },
    { name: "nohup: SIGHUP ignored is the parent's wish and kept", text: status("0000000000000000", "0000000000000001"), repairs: { resetChild: false, unblockAll: false } },
    { name: "both", text: status("0000000000004203", "0000000001015207"), repairs: { resetChild: true, unblockAll: true } },
    { name: "SigBlk as the first line (grep's output)", text: "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n", repairs: { resetChild: false, unblockAll: false } },
    { name: "a SigBlk inside another line is not it", text: "Name:\tSigBlk:\t1\nSigIgn:\t0\n", repairs: undefined },
    { name: "no SigBlk line", text: "Name:\tx\nSigIgn:\t0000000000010000\n", repairs: undefined },
    { name: "upper-case hex, SIGCHLD ignored", text: status("0000000000000000", "0000000001011000".toUpperCase()), repairs: { resetChild: true, unblockAll: false } },
    { name: "a short mask (SIGCHLD alone)", text: status("0", "10000"), repairs: { resetChild: true, unblockAll: false } },
    { name: "last line without a newline", text: `Name:\tx\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000010000`, repairs: { resetChild: true, unblockAll: false } },
    { name: "SigBlk as the first line (grep's output)", text: "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n", repairs: { resetChild: false, unblockAll: false } },
    { name: "a SigBlk inside another line is not it", text: "Name:\tSigBlk:\t1\nSigIgn:\t0\n", repairs: undefined },
    { name: "no SigBlk line", text: "Name:\tx\nSigIgn:\t0000000000010000\n", repairs: undefined },
    { name: "garbage", text: "Name:\tx\nSigBlk:\tzz\nSigIgn:\t00\n", repairs: undefined },
    { name: "trailing junk after a mask", text: status("0000000000000000x", "0000000000000000"), repairs: undefined },
    { name: "17 digits: not a kernel mask", text: status("00000000000000000", "0000000000000000"), repairs: undefined },
  ];
  for (const { name, text, repairs } of cases) {
    test(name, () => {
      const state = parseSignalState(text);
      expect(state === undefined ? undefined : signalRepairs(state)).toEqual(repairs);
    });
  }

  const bits: { mask: string; signal: number; has: boolean }[] = [
    { mask: "0000000000010000", signal: SIG.CHLD, has: true },
    { mask: "0000000000010000", signal: SIG.TERM, has: false },
    { mask: "0000000000004203", signal: SIG.HUP, has: true },
    { mask: "0000000000004203", signal: SIG.INT, has: true },
    { mask: "0000000000004203", signal: SIG.USR1, has: true },
    { mask: "0000000000004203", signal: SIG.TERM, has: true },
    { mask: "0000000000004203", signal: SIG.QUIT, has: false },
    { mask: "8000000000000000", signal: 64, has: true },
    { mask: "1", signal: SIG.CHLD, has: false },
  ];
  for (const { mask, signal, has } of bits) {
    test(`mask ${mask} ${has ? "holds" : "does not hold"} signal ${signal}`, () => expect(maskHas(mask, signal)).toBe(has));
  }

  test("this test process's own status parses", () => {
    expect(signalState("self").blocked).toBeGreaterThanOrEqual(0n);
  });
});

describe("a parent that ignores SIGCHLD and blocks the terminating signals", () => {
  test("the compiled binary installs, starts clean daemons, hosts clean processes, passes doctor and stops gracefully", async () => {
    const home = newHome({ install: false, settings: { stopGraceMs: STOP_GRACE_MS } });
    const download = join(home.env.HOME as string, "download", "berth");
    mkdirSync(join(home.env.HOME as string, "download"), { mode: 0o700 });
    copyFileSync(compiled.berth, download);
    chmodSync(download, 0o755);
    const hostile = (cmd: string[]) => home.exec([...HOSTILE_PARENT, ...cmd]);

    // install runs the new binary's --version: with SIGCHLD ignored that wait used to find no child.
    const installed = await hostile([download, "install", "--no-modify-path"]);
    expect(installed.json).toMatchObject({ status: "installed", version: VERSION });
    const managed = home.path("packages", "standalone", "current", "berth");

    const started = await hostile([managed, "start"]);
    expect(started.json).toMatchObject({ status: "started", backend: "pid" });
    const { pid, socketPath } = started.json as { pid: number; socketPath: string };
    // The daemons ignore nothing the parent ignored (only what Bun ignores in itself).
    expect(signalState(pid).ignored & ~BUN_OWN_IGNORED).toBe(0n);
    expect(await eventually(() => keepersOf(home).length > 0)).toBe(true);
    for (const keeper of keepersOf(home)) expect(signalState(keeper).ignored & ~BUN_OWN_IGNORED).toBe(0n);

    await expectCleanUserProcesses(socketPath);

    // The commands that skip the repair (main.ts LAUNCHES_NOTHING) work as they are.
    expect((await hostile([managed, "status"])).json.appServer).toMatchObject({ state: "running", pid });
    expect((await hostile([managed, "version"])).json).toMatchObject({ status: "running", pid });

    // doctor runs the managed binary's --version the same way.
    const doctor = await hostile([managed, "doctor"]);
    expect(doctor.json.findings.find((finding: { check: string }) => finding.check === "managedBinary")).toMatchObject({ ok: true });

    // A process left running: only a graceful stop (the server's own SIGTERM handler) ends it and reports it.
    const ws = await apiClient(socketPath);
    await call(ws, "process/spawn", { argv: ["sleep", "600"] });
    ws.destroy();
    const stopped = await hostile([managed, "stop"]);
    expect(stopped.json).toMatchObject({ status: "stopped", processesEnded: 1 });
    expect(isAlive(pid)).toBe(false);
  }, TEST_TIMEOUT_MS);

  test("`berth serve` run by hand: exits are reported, and a user's process dies of SIGTERM, SIGINT and SIGHUP", async () => {
    const home = newHome({ install: false });
    const socket = home.path("daemon", "app-server.sock");
    const proc = Bun.spawn([...HOSTILE_PARENT, BUN, MAIN, "serve", "--listen", `unix://${socket}`], { env: home.env, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    cleanups.push(() => proc.kill("SIGKILL"));
    const stderr = new Response(proc.stderr).text();
    const ready = await eventually(async () => {
      if (proc.exitCode !== null) return true;
      (await connect(socket, { timeoutMs: 500 })).destroy();
      return true;
    }, SERVE_READY_MS);
    expect(ready && proc.exitCode === null).toBe(true);

    // With SIGCHLD ignored the server's wait on its child rejected (ECHILD) and took the server down.
    expect((await runThroughApi(socket, ["sh", "-c", "exit 7"], false)).exit).toEqual({ exitCode: 7, signal: null });
    await expectCleanUserProcesses(socket);

    // Blocked in the server, these were blocked in every process it spawned with pipes.
    const ws = await apiClient(socket);
    const out = new OutputCollector(ws);
    for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"]) {
      const { process: p } = await call(ws, "process/spawn", { argv: ["sleep", "600"] });
      await call(ws, "process/signal", { processId: p.processId, signal });
      expect(await out.waitExited(p.processId)).toEqual({ exitCode: null, signal });
    }
    ws.destroy();

    // And the server itself ends on SIGTERM, by its handler (exit 0), not after an escalation.
    proc.kill("SIGTERM");
    const ended = await Promise.race([proc.exited, Bun.sleep(SERVE_EXIT_MS).then(() => "still running")]);
    expect({ ended, stderr: ended === 0 ? "" : await stderr }).toEqual({ ended: 0, stderr: "" });
  }, TEST_TIMEOUT_MS);
});

/** The keeper's verdicts for its sh loop: one line, its token first (src/update/keeper-sh.ts), not JSON. */
const VERDICT_FILES = new Set(["keeper-next", "update-next"]);

/**
 * Every file in daemon/ that is not a log: locks stay empty, records stay JSON, verdicts stay verdict lines.
 * A temp sibling is a write in flight (the keeper's), renamed or gone by the time it is looked at: skipped.
 */
function expectStateIntact(home: TestHome): void {
  for (const name of readdirSync(home.path("daemon"))) {
    const path = home.path("daemon", name);
    if (name.includes(".log") || TEMP_NAME_PATTERN.test(name) || !statSync(path).isFile()) continue;
    const text = readFileSync(path, "utf8");
    if (name.endsWith(".lock")) expect({ name, text }).toEqual({ name, text: "" });
    else if (VERDICT_FILES.has(name)) expect({ name, text }).toEqual({ name, text: expect.stringMatching(/^[ku]\.[\d.]+ \S+/) });
    else if (text !== "") expect(() => JSON.parse(text)).not.toThrow();
    expect({ name, output: text.includes('"cliVersion"') }).toEqual({ name, output: false });
  }
}

function fdTarget(pid: number, fd: number): string {
  return readlinkSync(`/proc/${pid}/fd/${fd}`);
}

describe("closed standard descriptors (cron, `berth status >&-`)", () => {
  test("no JSON lands in a state or lock file, commands still succeed, and the daemons get /dev/null and their logs", async () => {
    const { home, binary } = compiledHome();
    const rc = join(home.env.HOME as string, "rc");
    const r = await shell(home, binary, `"$B" start 0<&- 1>&- 2>&-; echo "$?" >'${rc}'`);
    expect(r.code).toBe(0);
    expect(readFileSync(rc, "utf8").trim()).toBe("0");
    const pid = readJson(home.path("daemon", "app-server.pid")).pid as number;
    expect([0, 1, 2].map((fd) => fdTarget(pid, fd))).toEqual(["/dev/null", home.path("daemon", "app-server.log"), home.path("daemon", "app-server.log")]);
    expect(await eventually(() => keepersOf(home).length > 0)).toBe(true);
    const keeper = keepersOf(home)[0] as number;
    // Looked at until seen so: each tick the loop's sh points its own fd 2 at /dev/null for a moment (`{ read …; } 2>/dev/null`).
    const keeperFds = [0, 1, 2].map(() => "");
    const loggedFds = ["/dev/null", home.path("daemon", "updater.log"), home.path("daemon", "updater.log")];
    const keeperLogs = () => [0, 1, 2].every((fd) => (keeperFds[fd] = fdTarget(keeper, fd)) === loggedFds[fd]);
    expect({ ok: await eventually(keeperLogs), keeperFds }).toEqual({ ok: true, keeperFds: loggedFds });
    for (const [command, redirect] of [["status", "1>&-"], ["version", "1>&-"], ["status", "0<&- 1>&- 2>&-"], ["restart", "1>&-"], ["status", "0<&- 2>&-"]] as const) {
      const run = await shell(home, binary, `"$B" ${command} ${redirect}; echo "rc=$?" >&2`);
      expect({ command, redirect, rc: run.stderr.includes("rc=0") }).toEqual({ command, redirect, rc: true });
      expectStateIntact(home);
    }
    const stopped = await shell(home, binary, `"$B" stop 2>&- 0<&-`);
    expect(stopped.json?.status).toBe("stopped");
    expectStateIntact(home);
  }, TEST_TIMEOUT_MS);
});

/** How long a pipe may stay open after `start` returned before the test calls it held by a daemon. */
const PIPE_EOF_WAIT_S = 20;

describe("descriptors a parent leaked to berth (no close-on-exec)", () => {
  test("the daemons hold none of them: a pipe given as fds 3, 7 and 9 reaches EOF once start returns", async () => {
    const { home, binary } = compiledHome();
    // `timeout` ends the reader if a daemon kept the pipe's write end: then the line fails (status 124).
    const r = await shell(home, binary, `{ "$B" start 3>&1 7>&1 9>&1 | timeout ${PIPE_EOF_WAIT_S} cat; } ; echo "reader-status=$?" >&2`);
    expect(r.stderr).toContain("reader-status=0");
    expect(r.json?.status).toBe("started");
    expect(isAlive(readJson(home.path("daemon", "app-server.pid")).pid)).toBe(true);
  }, TEST_TIMEOUT_MS);
});

/** One unusual environment: a shell prefix before `exec "$B" <command>`. */
type EnvCase = { name: string; prefix: string };
const ENV_CASES: EnvCase[] = [
  { name: "umask 000", prefix: "umask 000;" },
  { name: "umask 077", prefix: "umask 077;" },
  { name: "open files limited to 32", prefix: "ulimit -n 32;" },
  { name: "PATH empty", prefix: "PATH=;" },
  { name: "PATH unset", prefix: "unset PATH;" },
  { name: "HOME unset (BERTH_HOME set)", prefix: "unset HOME;" },
  { name: "HOME empty (BERTH_HOME set)", prefix: "export HOME=;" },
  { name: "HOME not a folder (BERTH_HOME set)", prefix: "export HOME=/dev/null;" },
  { name: "file size limited to 1 KiB (the logs stop growing)", prefix: "ulimit -f 1;" },
  { name: "TMPDIR a missing folder", prefix: "export TMPDIR=/nonexistent/berth-tmp;" },
  { name: "odd locale", prefix: "export LANG=xx_YY.BOGUS LC_ALL=C.UTF-16;" },
  { name: "Turkish locale (dotless i)", prefix: "export LC_ALL=tr_TR.UTF-8;" },
];

describe("unusual environments: start, status, stop work and state keeps its modes", () => {
  for (const { name, prefix } of ENV_CASES) {
    test(name, async () => {
      const { home, binary } = compiledHome();
      const run = (command: string) => shell(home, binary, `${prefix} exec "$B" ${command}`);
      const started = await run("start");
      expect({ json: started.json, stderr: started.stderr }).toMatchObject({ json: { status: "started" } });
      expect((await run("status")).json.appServer.state).toBe("running");
      // Directories 0700, files 0600, the socket included (connectable by its owner only).
      for (const entry of readdirSync(home.path("daemon"))) {
        if (entry === "settings.json") continue; // written by this test, not by berth
        // The keeper runs meanwhile: a temp file it renamed between the listing and this stat is gone (seen in CI).
        const stat = statSync(home.path("daemon", entry), { throwIfNoEntry: false });
        if (!stat) continue;
        expect({ entry, mode: (stat.mode & 0o777).toString(8) }).toEqual({ entry, mode: "600" });
      }
      expect((statSync(home.path("daemon")).mode & 0o777).toString(8)).toBe("700");
      expect((await run("stop")).json.status).toBe("stopped");
    }, TEST_TIMEOUT_MS);
  }
});

describe("a relative HOME", () => {
  test("start derives an absolute BERTH_HOME from it, and stop finds the same server", async () => {
    const { home } = compiledHome();
    const base = home.env.HOME as string;
    const relativeHome = join(base, "rel", ".berth");
    mkdirSync(join(base, "rel"), { mode: 0o700 });
    mkdirSync(relativeHome, { mode: 0o700 });
    copyFileSync(compiled.berth, installRelease(relativeHome, VERSION, ""));
    cleanups.push(() => killProcessesOf(relativeHome));
    const { BERTH_HOME: _home, ...env } = home.env;
    const run = (command: string) => runProcess(["sh", "-c", `cd '${base}' && HOME=rel exec rel/.berth/packages/standalone/current/berth ${command}`], env);
    const started = await run("start");
    expect(started.json).toMatchObject({ status: "started", socketPath: join(relativeHome, "daemon", "app-server.sock") });
    expect((await run("stop")).json.status).toBe("stopped");
    expect(isAlive(started.json.pid)).toBe(false);
  }, TEST_TIMEOUT_MS);
});

/** Live children of `parent`, by the product's own /proc/<pid>/stat parser. */
function childrenOf(parent: number): number[] {
  const isChild = (entry: string) => {
    try {
      const stat = parseProcStat(readFileSync(`/proc/${entry}/stat`, "utf8"));
      return stat !== undefined && stat.ppid === parent && stat.state !== "Z";
    } catch {
      return false; // exited meanwhile
    }
  };
  return readdirSync("/proc").filter((entry) => /^\d+$/.test(entry) && isChild(entry)).map(Number);
}

/** Attempts before the low limit must have been hit: every hosted process holds several descriptors. */
const SPAWNS_PAST_LIMIT = 40;

describe("an app-server started under a low hard limit of open files", () => {
  test("process/spawn fails with the limit code (EMFILE), leaks no child, and the server keeps serving", async () => {
    const { home, binary } = compiledHome();
    const started = await shell(home, binary, `ulimit -n 32; exec "$B" start`);
    expect(started.json?.status).toBe("started");
    const { pid, socketPath } = started.json as { pid: number; socketPath: string };
    const ws = await apiClient(socketPath);
    let spawned = 0;
    /** Spawns until the first failure (pipes, then terminals, which Bun reports without an errno). */
    const spawnUntilRefused = async (terminal: boolean) => {
      for (let i = 0; i < SPAWNS_PAST_LIMIT; i += 1) {
        const reply = await ws.request({ method: "process/spawn", params: { argv: ["sleep", "600"], ...(terminal ? { terminal: { cols: 80, rows: 24 } } : {}) } });
        if (reply.error) return reply.error as { code: number; data?: { errno?: string } };
        spawned += 1;
      }
      return undefined;
    };
    expect(await spawnUntilRefused(false)).toMatchObject({ code: -32001, data: { errno: "EMFILE" } });
    expect(await spawnUntilRefused(true)).toMatchObject({ code: -32001 });
    // A child refused after it started was killed: it may take a moment to be gone.
    expect(await eventually(() => childrenOf(pid).length === spawned)).toBe(true);
    expect((await call(ws, "process/list")).processes).toHaveLength(spawned);
    ws.destroy();
    expect((await home.exec([binary, "stop"])).json).toMatchObject({ status: "stopped", processesEnded: spawned });
  }, TEST_TIMEOUT_MS);
});

describe("a deleted working folder (a shell left in a removed build folder)", () => {
  test("the compiled binary still answers --version, status, start and stop, each with its JSON", async () => {
    const { home, binary } = compiledHome();
    const gone = join(home.env.HOME as string, "gone");
    mkdirSync(gone);
    const run = (command: string) => shell(home, binary, `cd '${gone}' && rmdir '${gone}' && exec "$B" ${command}`, {}).finally(() => mkdirSync(gone, { recursive: true }));
    const version = await run("--version");
    expect({ code: version.code, stdout: version.stdout.trim(), stderr: version.stderr }).toEqual({ code: 0, stdout: VERSION, stderr: "" });
    expect((await run("status")).json?.status).toBe("stopped");
    const started = await run("start");
    expect(started.json).toMatchObject({ status: "started", backend: "pid" });
    expect((await run("stop")).json).toMatchObject({ status: "stopped" });
    expect(isAlive(started.json.pid)).toBe(false);
  }, TEST_TIMEOUT_MS);
});

describe("Bun's runtime options in the environment (BUN_OPTIONS, an IDE's BUN_INSPECT*)", () => {
  const cases: { name: string; env: Record<string, string>; left: Record<string, string>; removed: string[] }[] = [
    { name: "nothing to drop", env: { PATH: "/bin", HOME: "/h" }, left: { PATH: "/bin", HOME: "/h" }, removed: [] },
    { name: "BUN_OPTIONS", env: { BUN_OPTIONS: "--preload ./setup.ts", PATH: "/bin" }, left: { PATH: "/bin" }, removed: ["BUN_OPTIONS"] },
    { name: "an IDE's debug terminal", env: { BUN_INSPECT: "ws://x?break=1", BUN_INSPECT_NOTIFY: "unix:///y", BUN_INSPECT_CONNECT_TO: "z", BUN_INSPECT_PRELOAD: "p", TERM: "xterm" }, left: { TERM: "xterm" }, removed: ["BUN_INSPECT", "BUN_INSPECT_CONNECT_TO", "BUN_INSPECT_NOTIFY", "BUN_INSPECT_PRELOAD"] },
    { name: "empty BUN_OPTIONS is still Bun's", env: { BUN_OPTIONS: "" }, left: {}, removed: ["BUN_OPTIONS"] },
    { name: "look-alikes are the user's", env: { BUN_OPTIONS_X: "1", MY_BUN_OPTIONS: "2", BUN_INSTALL: "/b" }, left: { BUN_OPTIONS_X: "1", MY_BUN_OPTIONS: "2", BUN_INSTALL: "/b" }, removed: [] },
  ];
  for (const { name, env, left, removed } of cases) {
    test(`drop: ${name}`, () => {
      const copy = { ...env };
      expect(dropBunRuntimeEnv(copy)).toEqual(removed);
      expect(copy).toEqual(left);
    });
  }

  test("a relative --preload of the caller's folder: start works, and no daemon nor user process inherits it", async () => {
    const { home, binary } = compiledHome();
    const project = join(home.env.HOME as string, "project");
    mkdirSync(project);
    writeFileSync(join(project, "setup.js"), 'process.stderr.write("setup preloaded\\n");\n');
    const env = { BUN_OPTIONS: "--preload ./setup.js", BUN_INSPECT_CONNECT_TO: "unix:///nonexistent/debugger" };
    const inProject = (command: string) => shell(home, binary, `cd '${project}' && exec "$B" ${command}`, env);
    // Bun applies it to the command itself (found in this folder), and used to hand it to the app-server, started in BERTH_HOME.
    const started = await inProject("start");
    expect(started.stderr).toContain("setup preloaded");
    expect(started.json).toMatchObject({ status: "started", backend: "pid" });
    expect(await eventually(() => keepersOf(home).length > 0)).toBe(true);
    for (const pid of [started.json.pid as number, ...keepersOf(home)]) {
      const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
      expect({ pid, bun: environ.filter((entry) => entry.startsWith("BUN_")) }).toEqual({ pid, bun: [] });
    }
    const printed = await runThroughApi(started.json.socketPath, ["sh", "-c", "env | grep '^BUN_' || echo none"], false);
    expect(printed.text.trim()).toBe("none");
    expect((await inProject("stop")).json).toMatchObject({ status: "stopped" });
  }, TEST_TIMEOUT_MS);

  test("--version exits even when BUN_OPTIONS asks for --watch or --hot", async () => {
    const { home, binary } = compiledHome();
    for (const option of ["--watch", "--hot"]) {
      const r = await shell(home, binary, `timeout ${PIPE_EOF_WAIT_S} "$B" --version`, { BUN_OPTIONS: option });
      expect({ option, code: r.code, stdout: r.stdout.trim() }).toEqual({ option, code: 0, stdout: VERSION });
    }
  }, TEST_TIMEOUT_MS);
});

describe("berth's own decisions stay out of what it launches", () => {
  test("NO_COLOR, set for help read through a pipe, never reaches the daemons or a user's terminal", async () => {
    const { home, binary } = compiledHome();
    const { NO_COLOR: _caller, ...env } = home.env;
    // Help through a pipe: plain text (the one place berth turns colour off).
    for (const args of [["--help"], ["start", "--help"], ["help", "start"]]) {
      const help = await runProcess([binary, ...args], env);
      expect({ args, code: help.code, escapes: help.stdout.includes("\u001b[") }).toEqual({ args, code: 0, escapes: false });
    }
    const started = await runProcess([binary, "start"], env);
    expect(started.json).toMatchObject({ status: "started" });
    expect(await eventually(() => keepersOf(home).length > 0)).toBe(true);
    for (const pid of [started.json.pid as number, ...keepersOf(home)]) {
      const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
      expect({ pid, noColor: environ.some((entry) => entry.startsWith("NO_COLOR=")) }).toEqual({ pid, noColor: false });
    }
    const printed = await runThroughApi(started.json.socketPath, ["sh", "-c", 'echo "NO_COLOR=${NO_COLOR-unset}"'], true);
    expect(printed.text.trim()).toBe("NO_COLOR=unset");
    expect((await runProcess([binary, "stop"], env)).json).toMatchObject({ status: "stopped" });
  }, TEST_TIMEOUT_MS);
});
