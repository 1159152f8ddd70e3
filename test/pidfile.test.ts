/**
 * The reference design's pid-backend behaviours, restated for berth, with the
 * reservation lock held by a real separate process.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { PidBackend } from "../src/daemon/backend.ts";
import { judgePidFile, parsePidFile, type PidFileContent, type PidFileVerdict } from "../src/daemon/pidfile.ts";
import { isBerthError } from "../src/errors.ts";
import { parseProcStat, processArgv, processIdentity } from "../src/platform/process.ts";
import { isLockHeld } from "../src/daemon/lock.ts";
import { BUN, eventually, isAlive, MAIN, makeHome, type TestHome } from "./helpers/berth.ts";
import { holdLock, type Holder } from "./helpers/holder.ts";

/** How long a berth command may take (under load) to start and take daemon.lock. */
const LOCK_SEEN_TIMEOUT_MS = 20_000;

let home: TestHome;
const spawned: Bun.Subprocess[] = [];
afterEach(async () => {
  for (const child of spawned.splice(0)) child.kill("SIGKILL");
  await home?.cleanup();
});

function backendIn(h: TestHome) {
  return new PidBackend({ pidPath: h.path("app-server.pid"), trackGroup: false });
}

function sleeper(): Bun.Subprocess {
  const child = Bun.spawn({ cmd: ["sleep", "600"], stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  spawned.push(child);
  return child;
}

describe("pidfile state (pure)", () => {
  const record = { kind: "record", record: { pid: 42, processStartTime: "boot/1" } } as const satisfies PidFileContent;
  const cases: { content: PidFileContent; lockHeld: boolean; recordAlive: boolean; expected: PidFileVerdict }[] = [
    { content: { kind: "missing" }, lockHeld: false, recordAlive: false, expected: "missing" },
    { content: { kind: "empty" }, lockHeld: true, recordAlive: false, expected: "starting" },
    { content: { kind: "empty" }, lockHeld: false, recordAlive: false, expected: "staleReservation" },
    { content: { kind: "corrupt", text: "{" }, lockHeld: false, recordAlive: false, expected: "corrupt" },
    { content: { kind: "corrupt", text: "{" }, lockHeld: true, recordAlive: false, expected: "starting" },
    { content: record, lockHeld: false, recordAlive: true, expected: "running" },
    { content: record, lockHeld: true, recordAlive: true, expected: "running" },
    { content: record, lockHeld: false, recordAlive: false, expected: "staleRecord" },
  ];
  for (const { content, lockHeld, recordAlive, expected } of cases) {
    test(`${content.kind}, lock ${lockHeld ? "held" : "free"}, process ${recordAlive ? "alive" : "gone"} → ${expected}`, () => {
      expect(judgePidFile(content, { lockHeld, recordAlive })).toBe(expected);
    });
  }

  const parses: { text: string | undefined; kind: PidFileContent["kind"] }[] = [
    { text: undefined, kind: "missing" },
    { text: "", kind: "empty" },
    { text: "  \n", kind: "empty" },
    { text: '{"pid":123,"processStartTime":"b/9"}', kind: "record" },
    { text: '{"pid":"123","processStartTime":"b/9"}', kind: "corrupt" },
    { text: '{"pid":1,"processStartTime":"b/9"}', kind: "corrupt" },
    { text: '{"pid":123}', kind: "corrupt" },
    { text: "123", kind: "corrupt" },
    { text: '{"pid":12', kind: "corrupt" },
  ];
  for (const { text, kind } of parses) {
    test(`parses ${JSON.stringify(text)} as ${kind}`, () => expect(parsePidFile(text).kind).toBe(kind));
  }
});

describe("/proc/<pid>/stat (pure)", () => {
  // pid (comm) state ppid pgrp session, 15 more fields, starttime (field 22), then the rest of proc(5)'s fields.
  const line = (comm: string, head: string, start: string, rest = " 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0") =>
    `4711 (${comm}) ${head} ${"0 ".repeat(15)}${start}${rest}\n`;
  const cases: Array<{ input: string; output: ReturnType<typeof parseProcStat> }> = [
    { input: line("berth", "S 1 123 123", "4242"), output: { state: "S", ppid: 1, pgrp: 123, session: 123, startTime: "4242" } },
    // A name with spaces and parentheses: split after the last ')'.
    { input: line("a) b (c)", "Z 5 6 7", "99"), output: { state: "Z", ppid: 5, pgrp: 6, session: 7, startTime: "99" } },
    { input: line("x", "R 2 3 4", "77", ""), output: { state: "R", ppid: 2, pgrp: 3, session: 4, startTime: "77" } },
    { input: "9 (x) R 2 3 4 0 0\n", output: undefined },
    { input: line("x", "R 2 x 4", "77"), output: undefined },
    { input: line("x", "R 2 3 4", "-1"), output: undefined },
    { input: "garbage", output: undefined },
    { input: "", output: undefined },
  ];
  for (const { input, output } of cases) {
    test(JSON.stringify(input.slice(0, 30)), () => expect(parseProcStat(input)).toEqual(output));
  }
  test("argv from /proc/<pid>/cmdline keeps empty arguments inside, drops only the end", async () => {
    // `read` from a pipe nobody writes to: the shell waits without a child (a `sleep` would outlive its SIGKILL).
    const cmd = ["sh", "-c", "read -r _; :", "", "x"];
    const child = Bun.spawn({ cmd, stdin: "pipe", stdout: "ignore", stderr: "ignore" });
    spawned.push(child);
    expect(await eventually(() => processArgv(child.pid)?.[0] === "sh")).toBe(true);
    expect(processArgv(child.pid)).toEqual(cmd);
    expect(processArgv(2 ** 22 + 1)).toBeUndefined();
  });

  test("this process's own line", () => {
    const own = parseProcStat(readFileSync(`/proc/${process.pid}/stat`, "utf8"));
    expect(own?.ppid).toBe(process.ppid);
    expect(own?.state).toMatch(/^[RS]$/);
  });
});

describe("pid backend", () => {
  test("a locked empty pidfile is an active reservation and is left alone", async () => {
    home = makeHome({ install: false });
    const backend = backendIn(home);
    writeFileSync(backend.pidFile.path, "");
    const holder = await holdLock(backend.pidFile.lockPath);
    expect(backend.inspect()).toEqual({ kind: "starting" });
    expect(existsSync(backend.pidFile.path)).toBe(true);
    await holder.kill();
  });

  test("while both reservations are held, status says starting for each and version answers NOT_RUNNING: neither waits", async () => {
    home = makeHome();
    mkdirSync(home.path("daemon"), { mode: 0o700 });
    const holders = [
      await holdLock(home.path("daemon", "app-server.pid.lock"), home.path("daemon", "app-server.pid")),
      await holdLock(home.path("daemon", "updater.pid.lock"), home.path("daemon", "updater.pid")),
    ];
    try {
      const status = await home.run(["status"]);
      expect({ code: status.code, appServer: status.json.appServer.state, updater: status.json.updater.state }).toEqual({ code: 0, appServer: "starting", updater: "starting" });
      const version = await home.run(["version"]);
      expect({ code: version.code, error: version.json.error.code }).toEqual({ code: 1, error: "NOT_RUNNING" });
      // Answered while the reservations were live, and left them alone.
      for (const name of ["app-server.pid", "updater.pid"]) expect(readFileSync(home.path("daemon", name), "utf8")).toBe("");
    } finally {
      for (const holder of holders) await holder.kill();
    }
  });

  test("an unlocked empty pidfile is a stale reservation and is removed", () => {
    home = makeHome({ install: false });
    const backend = backendIn(home);
    writeFileSync(backend.pidFile.path, "");
    expect(backend.inspect()).toEqual({ kind: "missing" });
    expect(existsSync(backend.pidFile.path)).toBe(false);
  });

  test("stop waits for a live reservation to resolve, then acts on what it resolved to", async () => {
    home = makeHome();
    const pidPath = home.path("daemon", "app-server.pid");
    const { holder, command } = await commandWhileReserved(pidPath, ["stop"]);
    const target = sleeper();
    await publishThenRelease(holder, target.pid);
    const out = await succeeded(command);
    // Had stop not waited it would have found nothing to stop; it stopped the published process.
    expect(out.status).toBe("stopped");
    await target.exited;
    expect(isAlive(target.pid)).toBe(false);
  });

  // The reference's own case is the first: the starter's spawn failed, so it removes its reservation and lets go.
  // The second: the starter crashes, leaving the empty reservation with its lock free (a stale reservation).
  const resolutions: [string, (holder: Holder) => Promise<unknown>][] = [
    ["its starter then abandons", (holder) => (holder.send("unreserve"), holder.exited)],
    ["whose starter dies holding it (the leftover is cleaned)", (holder) => holder.kill()],
  ];
  for (const [what, resolve] of resolutions) {
    test(`stop waits for a live reservation ${what}: notRunning, exit 0, nothing left`, async () => {
      home = makeHome();
      const pidPath = home.path("daemon", "app-server.pid");
      const { holder, command } = await commandWhileReserved(pidPath, ["stop"]);
      await resolve(holder);
      expect((await succeeded(command)).status).toBe("notRunning");
      expect(existsSync(pidPath)).toBe(false);
    });
  }

  test("a reservation that never resolves: stop gives up with LOCK_TIMEOUT naming the pidfile, and still wants what it wanted", async () => {
    // stop waits startTimeoutMs + 5 s for a starter (the longest a start may take), here 5.2 s.
    home = makeHome({ settings: { startTimeoutMs: 200 } });
    const wanted = `{"appServer":"running","since":"2020-01-01T00:00:00.000Z"}\n`;
    writeFileSync(home.path("daemon", "wanted.json"), wanted);
    const pidPath = home.path("daemon", "app-server.pid");
    const { holder, command } = await commandWhileReserved(pidPath, ["stop"]);
    const out = JSON.parse(await new Response(command.stdout).text());
    expect(await command.exited).toBe(1);
    expect(out.error.code).toBe("LOCK_TIMEOUT");
    expect(out.error.message).toContain(pidPath);
    expect(readFileSync(home.path("daemon", "wanted.json"), "utf8")).toBe(wanted);
    expect(readFileSync(pidPath, "utf8")).toBe("");
    await holder.kill();
  }, 60_000);

  test("down waits for a live updater reservation, then stops the group it resolved to", async () => {
    home = makeHome();
    const pidPath = home.path("daemon", "updater.pid");
    const { holder, command } = await commandWhileReserved(pidPath, ["down"]);
    // A group leader, as the updater is.
    const target = Bun.spawn({ cmd: ["sleep", "600"], stdin: "ignore", stdout: "ignore", stderr: "ignore", detached: true });
    spawned.push(target);
    await publishThenRelease(holder, target.pid);
    const out = await succeeded(command);
    expect(out).toMatchObject({ status: "down", appServer: "notRunning", keeper: "stopped" });
    await target.exited;
    expect(isAlive(target.pid)).toBe(false);
    expect(existsSync(pidPath)).toBe(false);
  });

  test("a stale empty pidfile is retried under the starter's own lock; a missing binary is START_FAILED", async () => {
    home = makeHome({ install: false });
    const backend = backendIn(home);
    writeFileSync(backend.pidFile.path, "");
    const failure = await backend
      .launch({ binary: home.path("missing-berth"), args: ["serve"], cwd: home.home, env: home.env, logPath: home.path("log") })
      .then(() => undefined, (error) => error);
    expect(isBerthError(failure, "START_FAILED")).toBe(true);
    expect(failure.message).toStartWith("failed to spawn detached serve process using ");
    expect(existsSync(backend.pidFile.path)).toBe(false);
  });

  test("stale record cleanup keeps a replacement record written meanwhile", () => {
    home = makeHome({ install: false });
    const backend = backendIn(home);
    const replacementProcess = sleeper();
    const replacement = { pid: replacementProcess.pid, processStartTime: processIdentity(replacementProcess.pid) as string };
    writeFileSync(backend.pidFile.path, JSON.stringify(replacement));
    const stale = { pid: 999_999, processStartTime: "old" };
    expect(backend.pidFile.refreshAfterStaleRecord(stale)).toEqual({ kind: "running", record: replacement });
    expect(JSON.parse(readFileSync(backend.pidFile.path, "utf8"))).toEqual(replacement);
  });

  test("stale record cleanup: a replacement that is itself stale is judged under the same lock and removed", () => {
    home = makeHome({ install: false });
    const backend = backendIn(home);
    const replacement = { pid: 999_998, processStartTime: "gone/1" };
    writeFileSync(backend.pidFile.path, JSON.stringify(replacement));
    expect(backend.pidFile.refreshAfterStaleRecord({ pid: 999_999, processStartTime: "old" })).toEqual({ kind: "missing" });
    expect(existsSync(backend.pidFile.path)).toBe(false);
  });

  test("stale record cleanup leaves everything alone while another starter holds the lock", async () => {
    home = makeHome({ install: false });
    const backend = backendIn(home);
    const stale = { pid: 999_999, processStartTime: "old" };
    writeFileSync(backend.pidFile.path, JSON.stringify(stale));
    const holder = await holdLock(backend.pidFile.lockPath);
    try {
      expect(backend.pidFile.refreshAfterStaleRecord(stale)).toEqual({ kind: "starting" });
      expect(JSON.parse(readFileSync(backend.pidFile.path, "utf8"))).toEqual(stale);
    } finally {
      await holder.kill();
    }
  });

  test("a record whose pid now belongs to another process is stale, and that process is never signalled", async () => {
    home = makeHome({ install: false });
    const backend = backendIn(home);
    const stranger = sleeper();
    const record = { pid: stranger.pid, processStartTime: "another-boot/12345" };
    writeFileSync(backend.pidFile.path, JSON.stringify(record));
    expect(await backend.stop(record, 100)).toBe("notRunning");
    expect(isAlive(stranger.pid)).toBe(true);
    expect(existsSync(backend.pidFile.path)).toBe(false);
  });

  // SPEC "Lifecycle rules": a record from an earlier boot is stale and cleaned without error. The hard case: after
  // a reboot the same pid can run with the same kernel start time, and only the boot id tells them apart.
  test("a record of this very pid and start time but another boot id: stale, removed, never signalled (stop and down)", async () => {
    home = makeHome();
    mkdirSync(home.path("daemon"), { mode: 0o700 });
    const server = sleeper();
    const keeper = Bun.spawn({ cmd: ["sleep", "600"], stdin: "ignore", stdout: "ignore", stderr: "ignore", detached: true });
    spawned.push(keeper);
    const earlierBoot = (pid: number) => {
      const [bootId, startTime] = (processIdentity(pid) as string).split("/") as [string, string];
      const other = bootId.replace(/^./, (c) => (c === "0" ? "1" : "0"));
      return { pid, processStartTime: `${other}/${startTime}` };
    };
    writeFileSync(home.path("daemon", "app-server.pid"), JSON.stringify(earlierBoot(server.pid)));
    writeFileSync(home.path("daemon", "updater.pid"), JSON.stringify(earlierBoot(keeper.pid)));
    const stop = await home.run(["stop"]);
    expect({ code: stop.code, status: stop.json.status }).toEqual({ code: 0, status: "notRunning" });
    const down = await home.run(["down"]);
    expect(down.json).toMatchObject({ status: "down", appServer: "notRunning", keeper: "notRunning" });
    for (const name of ["app-server.pid", "updater.pid"]) expect(existsSync(home.path("daemon", name))).toBe(false);
    expect(isAlive(server.pid)).toBe(true);
    expect(isAlive(keeper.pid)).toBe(true);
  });

  test("the updater is tracked as a group: stop ends the members of a live leader's group", async () => {
    const { backend, launched, member } = await launchGroupWithMember();
    expect(backend.inspect()).toEqual({ kind: "running", record: launched.record });
    expect(await backend.stop(launched.record, 2_000)).toBe("stopped");
    expect(await eventually(() => !isAlive(member))).toBe(true);
    expect(backend.inspect()).toEqual({ kind: "missing" });
  });

  test("once the leader has exited, its group id proves nothing: the record is stale and the survivor is not signalled", async () => {
    const { backend, launched, member } = await launchGroupWithMember();
    writeFileSync(home.path("go"), "");
    expect(await eventually(() => !isAlive(launched.record.pid))).toBe(true);
    expect(backend.inspect()).toEqual({ kind: "missing" });
    expect(await backend.stop(launched.record, 2_000)).toBe("notRunning");
    expect(isAlive(member)).toBe(true);
    process.kill(member, "SIGKILL");
  });
});

/**
 * A reservation of `pidPath` held by another process, and `berth <args>` run beside it. Returns once the
 * command holds daemon.lock, which it takes before it reads the pidfile: it is then at or inside its wait.
 */
async function commandWhileReserved(pidPath: string, args: string[]) {
  mkdirSync(home.path("daemon"), { recursive: true, mode: 0o700 });
  const holder = await holdLock(`${pidPath}.lock`, pidPath);
  const command = Bun.spawn({ cmd: [BUN, MAIN, ...args], env: home.env, stdout: "pipe", stderr: "pipe" });
  spawned.push(command);
  const deadline = Date.now() + LOCK_SEEN_TIMEOUT_MS;
  while (!isLockHeld(home.path("daemon", "daemon.lock")) && Date.now() < deadline) await Bun.sleep(5);
  expect(isLockHeld(home.path("daemon", "daemon.lock"))).toBe(true);
  expect(command.exitCode).toBeNull();
  return { holder, command };
}

/** The starter publishes `pid` as its record, then lets go of the lock and exits. */
async function publishThenRelease(holder: Holder, pid: number): Promise<void> {
  holder.send(`publish ${pid}`);
  await holder.waitFor("published");
  holder.send("release");
  await holder.exited;
}

/** A berth command's one JSON object, once it has exited 0. */
async function succeeded(command: { stdout: ReadableStream<Uint8Array>; exited: Promise<number> }): Promise<any> {
  const out = JSON.parse(await new Response(command.stdout).text());
  expect(await command.exited).toBe(0);
  return out;
}

/**
 * An updater-style group: a leader that stays until a "go" file appears (so it is
 * surely alive when launch records it), and a `sleep` member of its group.
 */
async function launchGroupWithMember() {
  home = makeHome({ install: false });
  const backend = new PidBackend({ pidPath: home.path("updater.pid"), trackGroup: true });
  const launched = await backend.launch({
    binary: "/bin/sh",
    args: ["-c", "sleep 600 & echo $! > member.pid; while [ ! -e go ]; do sleep 0.01; done"],
    cwd: home.home,
    env: home.env,
    logPath: home.path("updater.log"),
  });
  const memberPidFile = home.path("member.pid");
  expect(await eventually(() => existsSync(memberPidFile) && readFileSync(memberPidFile, "utf8").trim() !== "")).toBe(true);
  return { backend, launched, member: Number(readFileSync(memberPidFile, "utf8")) };
}
