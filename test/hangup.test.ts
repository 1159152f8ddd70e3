/**
 * A dropped `ssh -tt`: the command runs on a real pseudo-terminal whose master
 * is closed at many points of `start`, `restart` and `install --bootstrap`
 * (SIGHUP to the foreground group, then EIO on every write). Whatever the
 * moment, the state afterwards is consistent: a running app-server has its
 * record, the install layout is complete, and the updater runs when the
 * settings want it.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compile } from "../build.ts";
import { argvOf, BUN, eventually, homeProcesses, isAlive, MAIN, makeHome, pgrpOf, processesOf, processesWithArg, type TestHome } from "./helpers/berth.ts";
import { holdLock } from "./helpers/holder.ts";

/** Moments (ms after spawn) at which the terminal goes away: from Bun's start-up to the end of the command. */
const HANGUP_DELAYS_MS = [0, 15, 30, 45, 60, 90, 130];
const COMMAND_EXIT_DEADLINE_MS = 60_000;
/** How long start waits for the held lock in the ^C test: ample time for the ^C to arrive first. */
const LOCK_WAIT_FOR_CTRL_C_MS = 3_000;
const TEST_TIMEOUT_MS = 600_000;

const homes: TestHome[] = [];
/** Every BERTH_HOME this file used, to prove at the end that nothing it started still runs. */
const everyHome: string[] = [];
afterEach(async () => {
  for (const home of homes.splice(0)) await home.cleanup();
});

function newHome(options: Parameters<typeof makeHome>[0] = {}): TestHome {
  const home = makeHome({ prefix: "berth-hangup-", ...options });
  homes.push(home);
  everyHome.push(home.home);
  return home;
}

type Exit = { code: number | null; signal: string | null; hungUp: boolean };
/** When the terminal goes away: a time after spawn, or the first moment a piece of state appears. */
type Moment = { name: string; delayMs?: number; when?: (home: TestHome) => boolean };

/** How long a held berth's children get to leave its process group (a detached spawn's setsid) before the hangup. */
const CHILDREN_SETTLE_MS = 200;

/**
 * Runs cmd on a fresh pty and closes the master at `moment` (polling the state
 * every millisecond); resolves once the command has exited.
 *
 * `holdUntilLeaderGone` (cmd is a shell that runs berth): the kernel hangs up
 * the foreground group a second time when that shell, the session leader,
 * exits, which on a loaded machine can come long after the moment, when berth
 * is already spawning its daemons (the known defect below: failed 4 runs in 10
 * under load at "settings written" or "130 ms"). So berth is stopped at the
 * moment, its children get CHILDREN_SETTLE_MS to leave its group (a detached
 * spawn is in it until its setsid), and it goes on once the shell is gone: the
 * whole hangup happens at the moment, as the variant means to test.
 */
async function runAndHangUp(cmd: string[], home: TestHome, env: Record<string, string>, moment: Moment, holdUntilLeaderGone = false): Promise<Exit> {
  const child = Bun.spawn(cmd, { env, terminal: { data() {} } });
  let hungUp = false;
  const deadline = Date.now() + COMMAND_EXIT_DEADLINE_MS;
  const timer = setTimeout(() => child.kill("SIGKILL"), COMMAND_EXIT_DEADLINE_MS);
  // The shell's child (berth), found once so that stopping it at the moment costs no scan.
  let berth: number | undefined;
  const findBerth = () => (berth ??= homeProcesses(home.home).find((p) => p.ppid === child.pid)?.pid);
  if (moment.delayMs !== undefined) await Bun.sleep(moment.delayMs);
  while (moment.when && child.exitCode === null && child.signalCode === null && Date.now() < deadline && !moment.when(home)) {
    if (holdUntilLeaderGone) findBerth();
    await Bun.sleep(1);
  }
  if (child.exitCode === null && child.signalCode === null) {
    hungUp = true;
    const held = holdUntilLeaderGone ? findBerth() : undefined;
    if (held !== undefined) {
      signal(held, "SIGSTOP");
      const group = pgrpOf(held);
      await eventually(() => homeProcesses(home.home).every((p) => p.pid === held || p.pid === child.pid || pgrpOf(p.pid) !== group), CHILDREN_SETTLE_MS, 5);
    }
    child.terminal?.close();
    if (held !== undefined) {
      await child.exited;
      signal(held, "SIGCONT");
    }
  }
  await child.exited;
  clearTimeout(timer);
  child.terminal?.close();
  return { code: child.exitCode, signal: child.signalCode === null ? null : String(child.signalCode), hungUp };
}

/** Signals one of the home's own processes (found by processesOf), which may have exited meanwhile. */
function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // gone
  }
}

const exists = (...parts: string[]) => (home: TestHome) => existsSync(home.path(...parts));
const nonEmpty = (...parts: string[]) => (home: TestHome) => {
  try {
    return readdirSync(home.path(...parts)).length > 0;
  } catch {
    return false;
  }
};
const serverCount = (home: TestHome) => processesWithArg(home.home, "serve").length;
const timed = (delayMs: number): Moment => ({ name: `${delayMs} ms`, delayMs });

function recordOf(path: string): { pid: number } | undefined {
  if (!existsSync(path)) return undefined;
  const text = readFileSync(path, "utf8").trim();
  return text === "" ? undefined : JSON.parse(text);
}

/** A running app-server has exactly one record naming it; no record means no server. */
async function expectAppServerConsistent(home: TestHome, where: string): Promise<"running" | "stopped"> {
  const servers = processesWithArg(home.home, "serve");
  const record = recordOf(home.path("daemon/app-server.pid"));
  if (record === undefined) {
    expect({ where, servers }).toEqual({ where, servers: [] });
    return "stopped";
  }
  expect({ where, servers }).toEqual({ where, servers: [record.pid] });
  const version = await home.run(["version"]);
  expect({ where, pid: version.json?.pid }).toEqual({ where, pid: record.pid });
  return "running";
}

async function expectUpdaterConsistent(home: TestHome, where: string): Promise<void> {
  const settingsPath = home.path("daemon/settings.json");
  const wanted = existsSync(settingsPath) && JSON.parse(readFileSync(settingsPath, "utf8")).autoUpdate === true;
  const record = recordOf(home.path("daemon/updater.pid"));
  const running = record !== undefined && isAlive(record.pid) && argvOf(record.pid).includes("update-loop");
  expect({ where, updaterRunning: running }).toEqual({ where, updaterRunning: wanted });
}

/** Either nothing was installed, or everything was: current → a release with its binary, the command link, no staging left. */
function expectInstallConsistent(home: TestHome, where: string): "installed" | "absent" {
  const current = home.path("packages/standalone/current");
  const link = join(home.env.BERTH_INSTALL_DIR as string, "berth");
  const staging = home.path("packages/standalone/staging");
  const leftovers = existsSync(staging) ? readdirSync(staging) : [];
  if (!existsSync(current)) {
    expect({ where, link: existsSync(link) }).toEqual({ where, link: false });
    return "absent";
  }
  expect({ where, binary: existsSync(join(current, "berth")), link: existsSync(link) && readlinkSync(link), leftovers }).toEqual({
    where,
    binary: true,
    link: join(current, "berth"),
    leftovers: [],
  });
  return "installed";
}

/** One hangup's line in the test's log: the moment, "missed:" when the terminal went away only after the command ended, and how it ended. */
function outcome(moment: Moment, exit: Exit): string {
  return `${moment.name}:${exit.hungUp ? "" : "missed:"}${exit.signal ?? exit.code}`;
}

/**
 * `berth <command>` on a terminal that hangs up at each moment, each time in a fresh home readied by `prepare`:
 * the app-server must be consistent after every one. Logs what each ended as.
 */
async function hangUpAtEach(command: string, moments: Moment[], prepare: (home: TestHome) => Promise<void> = async () => {}): Promise<void> {
  const outcomes: string[] = [];
  for (const moment of moments) {
    const home = newHome();
    await prepare(home);
    const exit = await runAndHangUp([BUN, MAIN, command], home, home.env, moment);
    outcomes.push(`${outcome(moment, exit)}:${await expectAppServerConsistent(home, `${command}, hangup at ${moment.name}`)}`);
    await home.cleanup();
  }
  console.error(`${command} hangups: ${outcomes.join(" ")}`);
}

describe("start on a terminal that hangs up", () => {
  test("the app-server never runs without its record", async () => {
    const moments: Moment[] = [
      ...HANGUP_DELAYS_MS.map(timed),
      { name: "daemon.lock created", when: exists("daemon", "daemon.lock") },
      { name: "reservation made", when: exists("daemon", "app-server.pid") },
      { name: "server spawned", when: (home) => serverCount(home) > 0 },
      { name: "socket bound", when: exists("daemon", "app-server.sock") },
    ];
    await hangUpAtEach("start", moments);
  }, TEST_TIMEOUT_MS);
});

describe("restart on a terminal that hangs up", () => {
  test("the app-server never runs without its record", async () => {
    const moments: Moment[] = [
      ...HANGUP_DELAYS_MS.map(timed),
      { name: "old server gone", when: (home) => serverCount(home) === 0 },
      { name: "new reservation made", when: (home) => serverCount(home) === 0 && existsSync(home.path("daemon", "app-server.pid")) },
      { name: "new server spawned", when: (home) => serverCount(home) === 0 ? false : recordOf(home.path("daemon/app-server.pid")) === undefined },
    ];
    await hangUpAtEach("restart", moments, async (home) => {
      const started = await home.run(["start"]);
      expect(started.code).toBe(0);
    });
  }, TEST_TIMEOUT_MS);
});

describe("Ctrl-C on the terminal during start", () => {
  // ^C while start waits for daemon.lock (held by another process for longer than start waits, so no child
  // of start exists yet and the moment is not a race): start must not die of SIGINT; it ends as it would have, here with LOCK_TIMEOUT.
  test("a real ^C (SIGINT to the foreground group) is deferred: start ends with its own result, not the signal", async () => {
    const home = newHome();
    mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
    const lockPath = home.path("daemon", "daemon.lock");
    const holder = await holdLock(lockPath);
    try {
      let screen = "";
      const child = Bun.spawn([BUN, MAIN, "start"], {
        env: { ...home.env, BERTH_LOCK_WAIT_MS: String(LOCK_WAIT_FOR_CTRL_C_MS) },
        terminal: { data: (_terminal, data) => void (screen += new TextDecoder().decode(data)) },
      });
      // It runs the command once it catches SIGHUP and SIGINT (bits 0 and 1 of SigCgt); the held lock keeps it waiting.
      const catchesBoth = () => {
        try {
          const mask = /SigCgt:\s*([0-9a-f]+)/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))?.[1] ?? "0";
          return (Number.parseInt(mask.slice(-2), 16) & 0b11) === 0b11;
        } catch {
          return false;
        }
      };
      const waiting = await eventually(catchesBoth, COMMAND_EXIT_DEADLINE_MS, 1);
      expect(waiting).toBe(true);
      child.terminal?.write("\x03");
      const ended = () => child.exitCode !== null || child.signalCode !== null;
      // Its last words (the JSON line) or its death; then the terminal is closed (Bun's exited can wait for that).
      await eventually(() => screen.includes("LOCK_TIMEOUT") || ended(), COMMAND_EXIT_DEADLINE_MS);
      await eventually(ended, COMMAND_EXIT_DEADLINE_MS);
      child.terminal?.close();
      const timer = setTimeout(() => child.kill("SIGKILL"), COMMAND_EXIT_DEADLINE_MS);
      await child.exited;
      clearTimeout(timer);
      expect(screen).toContain("LOCK_TIMEOUT");
      expect({ exitCode: child.exitCode, signal: child.signalCode }).toEqual({ exitCode: 1, signal: null });
      expect(screen).toContain("SIGINT arrived while berth was changing state");
      expect(await expectAppServerConsistent(home, "start, ^C while waiting for daemon.lock")).toBe("stopped");
    } finally {
      await holder.kill();
    }
  });
});

describe("install --bootstrap on a terminal that hangs up", () => {
  const binDir = mkdtempSync(join(tmpdir(), "berth-hangup-bin-"));
  afterAll(() => rmSync(binDir, { recursive: true, force: true }));

  const binary = join(binDir, "berth");
  // Compiled on first use, not while the other suites poll (Bun.build would starve their 1 ms polling).
  let compiled: Promise<void> | undefined;
  const moments: Moment[] = [
    ...HANGUP_DELAYS_MS.map(timed),
    { name: "staging written", when: nonEmpty("packages", "standalone", "staging") },
    { name: "new binary answering --version", when: (home) => processesWithArg(home.home, "--version").length > 0 },
    { name: "release renamed", when: nonEmpty("packages", "standalone", "releases") },
    { name: "current flipped", when: exists("packages", "standalone", "current") },
    { name: "settings written", when: exists("daemon", "settings.json") },
    { name: "server reserved", when: exists("daemon", "app-server.pid") },
    { name: "server spawned", when: (home) => serverCount(home) > 0 },
    { name: "updater reserved", when: exists("daemon", "updater.pid") },
  ];
  // "direct": berth leads the terminal's session (what `ssh -tt host berth …` runs when the shell execs it);
  // "shell": berth and its children are in the foreground group of a shell that dies first.
  const ways: { name: string; cmd: (binary: string) => string[] }[] = [
    { name: "direct", cmd: (b) => [b, "install", "--bootstrap"] },
    { name: "shell", cmd: (b) => ["sh", "-c", '"$@"; exit $?', "sh", b, "install", "--bootstrap"] },
  ];
  // Through a shell that dies on the hangup, the kernel signals the terminal's foreground group, which a
  // just-spawned app-server or updater is still in until its setsid: berth blocks the terminal's signals around
  // those spawns and the daemons drop what came meanwhile (test/terminal-shield.test.ts), so the shell variant
  // hangs up at the spawns too, holding berth still until the shell is gone.
  for (const way of ways) {
    test(`${way.name}: layout complete, app-server recorded, updater running when settings want it; once begun, the install finishes`, async () => {
      await (compiled ??= compile({ version: "1.0.0", outfile: binary }));
      const outcomes: string[] = [];
      for (const moment of moments) {
        const home = newHome({ install: false });
        const env = { ...home.env, SHELL: "/bin/bash" };
        const exit = await runAndHangUp(way.cmd(binary), home, env, moment, way.name === "shell");
        // The shell may die first: wait for berth itself.
        const berthDone = await eventually(() => processesWithArg(home.home, "install").length === 0, COMMAND_EXIT_DEADLINE_MS);
        expect(berthDone).toBe(true);
        const where = `install --bootstrap (${way.name}), hangup at ${moment.name}`;
        const layout = expectInstallConsistent(home, where);
        const server = await expectAppServerConsistent(home, where);
        await expectUpdaterConsistent(home, where);
        if (moment.when) expect({ where, layout, server }).toEqual({ where, layout: "installed", server: "running" });
        outcomes.push(`${outcome(moment, exit)}:${layout}/${server}`);
        await home.cleanup();
      }
      console.error(`install --bootstrap (${way.name}) hangups: ${outcomes.join(" ")}`);
    }, TEST_TIMEOUT_MS);
  }
});

test("nothing started on a hung-up terminal is left running", async () => {
  expect(everyHome.length).toBeGreaterThan(0);
  expect(await eventually(() => everyHome.every((home) => processesOf(home).length === 0))).toBe(true);
});
