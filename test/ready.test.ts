/**
 * The readiness pipe (src/daemon/ready.ts): the starter hands the app-server
 * fd 3 + BERTH_READY_FD, the server writes one byte once it listens and closes
 * the fd, and the starter still confirms with `initialize`. Real processes, a
 * real pipe; nothing here asserts a time.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { closeSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { readyFdFrom } from "../src/daemon/ready.ts";
import { probeInitialize } from "../src/server/client.ts";
import { BUN, MAIN, installRelease, nonKeeperProcessesOf, homesPerTest, type TestHome } from "./helpers/berth.ts";

const SERVER_TIMEOUT_MS = 20_000;
/** How often the kill-right-after-the-notification case is tried (its timing differs from run to run). */
const KILL_AFTER_NOTIFY_RUNS = 5;
const KILL_STEP_MS = 2;
const ISO_STAMP = "\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z";
const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

const newHome = homesPerTest(afterEach);

/** A managed "binary": a sh prologue, then the real app-server from source (exec keeps the pid). */
function installWrapper(home: TestHome, prologue: string): void {
  installRelease(home.home, "0.1.0", `#!/bin/sh\n${prologue}\nBERTH_BUILD_VERSION=0.1.0 exec '${BUN}' '${MAIN}' "$@"\n`);
}

describe("readiness pipe", () => {
  test("readyFdFrom accepts only an inherited fd number ≥ 3", () => {
    const table: [string | undefined, number | undefined][] = [
      [undefined, undefined],
      ["", undefined],
      ["3", 3],
      ["9", 9],
      ["2", undefined],
      ["0", undefined],
      ["-3", undefined],
      ["3x", undefined],
      [" 3", undefined],
    ];
    for (const [value, expected] of table) {
      expect(readyFdFrom(value === undefined ? {} : { BERTH_READY_FD: value })).toBe(expected);
    }
  });

  test("berth serve writes one byte to BERTH_READY_FD once it listens, then closes it; initialize answers at once", async () => {
    const home = newHome();
    const socket = join(home.home, "daemon", "app-server.sock");
    const child = Bun.spawn({
      cmd: [BUN, MAIN, "serve", "--listen", `unix://${socket}`],
      env: { ...home.env, BERTH_READY_FD: "3" },
      stdio: ["ignore", "ignore", "ignore", "pipe"],
    });
    try {
      const fd = child.stdio[3] as number;
      // Everything the server writes before closing its end: EOF comes only when it closed fd 3.
      const received = await Promise.race([
        new Response(Bun.file(fd).stream()).bytes(),
        Bun.sleep(SERVER_TIMEOUT_MS).then(() => undefined),
      ]);
      expect(received).toBeDefined();
      expect(Array.from(received!)).toEqual([10]);
      // Still running after closing the pipe, and already answering: the byte meant "ready".
      expect(child.exitCode).toBeNull();
      const probe = await probeInitialize(socket, SERVER_TIMEOUT_MS);
      expect(probe.kind).toBe("berth");
      expect(probe.kind === "berth" && probe.info.pid).toBe(child.pid);
    } finally {
      child.kill("SIGKILL");
      await child.exited;
    }
  }, 30_000);

  // Bun makes the extra "pipe" slot a socketpair, hence socket:[…] in /proc.
  test("start hands the server the pipe as fd 3 and names it in BERTH_READY_FD", async () => {
    const home = newHome();
    const seen = join(home.home, "seen");
    // Only the app-server's launch (the keeper, launched after it, runs the same wrapper without the pipe).
    installWrapper(home, `[ "$1" = serve ] && printf '%s %s\\n' "$BERTH_READY_FD" "$(readlink /proc/self/fd/3)" > '${seen}'`);
    const start = await home.run(["start"]);
    expect(start.json).toMatchObject({ status: "started" });
    expect(readFileSync(seen, "utf8")).toMatch(/^3 (pipe|socket):\[\d+\]\n$/);
    expect((await home.run(["stop"])).json).toMatchObject({ status: "stopped" });
  }, 30_000);

  test("a notification that arrives before the server answers: start still confirms with initialize", async () => {
    const home = newHome();
    // Notifies at once (before Bun has even started), closes the pipe, and hides it from the server.
    installWrapper(home, `printf x >&3; exec 3>&-; unset BERTH_READY_FD`);
    const start = await home.run(["start"]);
    expect(start.json).toMatchObject({ status: "started", appServerVersion: "0.1.0" });
    const probe = await probeInitialize(start.json.socketPath, SERVER_TIMEOUT_MS);
    expect(probe.kind === "berth" && probe.info.pid).toBe(start.json.pid);
    expect((await home.run(["stop"])).json).toMatchObject({ status: "stopped" });
  }, 30_000);

  test("a server that never notifies (an older release) keeps the pipe open and still starts", async () => {
    const home = newHome();
    // fd 3 stays open in the server, which does not know the variable: no byte, no EOF.
    installWrapper(home, `unset BERTH_READY_FD`);
    const start = await home.run(["start"]);
    expect(start.json).toMatchObject({ status: "started", appServerVersion: "0.1.0" });
    expect((await home.run(["stop"])).json).toMatchObject({ status: "stopped" });
    expect(nonKeeperProcessesOf(home)).toEqual([]);
  }, 30_000);

  test("the server notifies, then logs: its stamped 'listening' line is in the log when start returns", async () => {
    const home = newHome();
    const start = await home.run(["start"]);
    expect(start.json).toMatchObject({ status: "started" });
    // The line is written in the same synchronous run as the notification, before any initialize is answered.
    const lines = readFileSync(join(home.home, "daemon", "app-server.log"), "utf8").trimEnd().split("\n");
    const listening = new RegExp(`^${ISO_STAMP} berth app-server 0\\.1\\.0 pid ${start.json.pid} listening on ${escapeRegExp(start.json.socketPath)}$`);
    expect(lines.filter((line) => listening.test(line))).toHaveLength(1);
    expect((await home.run(["stop"])).json).toMatchObject({ status: "stopped" });
  }, 30_000);

  test("a server killed right after it notifies leaves only whole, stamped lines in its log", async () => {
    const home = newHome();
    const daemonDir = join(home.home, "daemon");
    mkdirSync(daemonDir, { recursive: true, mode: 0o700 });
    const logPath = join(daemonDir, "app-server.log");
    const socket = join(daemonDir, "app-server.sock");
    for (let run = 0; run < KILL_AFTER_NOTIFY_RUNS; run += 1) {
      // Launched as start does: stdout and stderr are the log (so the server stamps its own lines), fd 3 the pipe.
      const logFd = openSync(logPath, "a", 0o600);
      const child = Bun.spawn({
        cmd: [BUN, MAIN, "serve", "--listen", `unix://${socket}`],
        env: { ...home.env, BERTH_READY_FD: "3" },
        stdio: ["ignore", logFd, logFd, "pipe"],
      });
      closeSync(logFd);
      try {
        const reader = Bun.file(child.stdio[3] as number).stream().getReader();
        const first = await Promise.race([reader.read(), Bun.sleep(SERVER_TIMEOUT_MS).then(() => undefined)]);
        expect(first?.done).toBe(false);
        // Killed at once in the first run, a little later in each next one: before, during or after its line.
        if (run > 0) await Bun.sleep(run * KILL_STEP_MS);
        child.kill("SIGKILL");
        await child.exited;
        void reader.cancel().catch(() => {});
      } finally {
        child.kill("SIGKILL");
        await child.exited;
      }
    }
    const lines = readFileSync(logPath, "utf8").split("\n");
    expect(lines.pop()).toBe("");
    const whole = new RegExp(`^${ISO_STAMP} berth app-server \\S+ pid \\d+ listening on ${escapeRegExp(socket)}$`);
    for (const line of lines) expect(line).toMatch(whole);
  }, 60_000);
});
