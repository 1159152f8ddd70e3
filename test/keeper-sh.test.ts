/**
 * The keeper as a POSIX-sh loop (src/update/keeper-sh.ts): a real dash (and
 * busybox ash) process under the recorded identity, real app-servers killed,
 * real releases flipped under it, its forks traced with strace.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { firstLine, keeperShellArgv, keeperShellEnv, keeperStepMaxMs, KEEPER_SCRIPT, KEEPER_SCRIPT_ENV, updateVerdictLine, verdictLine, watchedLine } from "../src/update/keeper-sh.ts";
import { wakeAtCs } from "../src/update/loop.ts";
import { processArgv, processEnvValue, processIdentity } from "../src/platform/process.ts";
import { probeInitialize } from "../src/server/client.ts";
import { BUN, eventually, homesPerTest, installRelease, isAlive, loopBinaryOf, MAIN, pgrpOf, processesOf, readJson, serversOf, type TestHome } from "./helpers/berth.ts";

const newHome = homesPerTest(afterEach);
const SLOW_TEST_MS = 60_000;
/** How long the idle loop is traced: several of its 0.5 s ticks. */
const TRACE_WINDOW_MS = 3_000;
const ANSWER_WAIT_MS = 20_000;
/** A loop told to end (SIGTERM) and its group gone: at once, but a loaded machine may take seconds. */
const LOOP_END_WAIT_MS = 15_000;
const has = (tool: string) => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;

async function answeringPid(home: TestHome): Promise<number | undefined> {
  const probe = await probeInitialize(home.path("daemon/app-server.sock"), 1_000);
  return probe.kind === "berth" ? probe.info.pid : undefined;
}

/** Bootstraps (keeper only unless told) and waits until the keeper is the sh loop watching the server. */
async function bootstrapped(home: TestHome, env: Record<string, string> = {}, args = ["--no-auto-update"]) {
  const result = await home.run(["bootstrap", ...args], { env });
  expect(result.json.status).toBe("bootstrapped");
  const json = result.json as { pid: number; updater: { pid: number } };
  expect(await eventually(() => loopBinaryOf(json.updater.pid) !== undefined, ANSWER_WAIT_MS)).toBe(true);
  expect(await eventually(() => readFileSync(home.path("daemon/updater.log"), "utf8").includes(`watching app-server pid ${json.pid}`), ANSWER_WAIT_MS)).toBe(true);
  return { server: json.pid, keeper: json.updater.pid };
}

/** Live members of process group `pgid`. */
function groupMembers(pgid: number): number[] {
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((pid) => pgrpOf(pid) === pgid && isAlive(pid));
}

/** A release whose launcher notes each run (`pid ppid args`) in `marker`, then runs berth from source. */
function markedRelease(home: TestHome, version: string, marker: string, before = ""): string {
  return installRelease(
    home.home,
    version,
    `#!/bin/sh\necho "$$ $PPID $*" >> '${marker}'\n${before}export BERTH_BUILD_VERSION='${version}'\nexec '${BUN}' '${MAIN}' "$@"\n`,
  );
}

describe("pure parts", () => {
  test("the verdict line: token, watched pid and kernel start time (or 0 0), wake-up, version", () => {
    const cases = [
      { input: { token: "7.1.2", watch: { pid: 42, processStartTime: "boot-id/12345" }, wakeAtCs: 100.2, version: "1.0.0" }, out: "7.1.2 42 12345 101 1.0.0\n" },
      { input: { token: "7.1.3", wakeAtCs: 5, version: "1.1.0" }, out: "7.1.3 0 0 5 1.1.0\n" },
      { input: { token: "-", watch: { pid: 9, processStartTime: "darwin/1.5" }, wakeAtCs: 0, version: "2.0.0" }, out: "- 9 1.5 0 2.0.0\n" },
    ];
    for (const { input, out } of cases) expect(verdictLine(input)).toBe(out);
  });

  test("wake-up time: ms to centiseconds on the uptime clock; never in the past; Infinity means the hourly fallback", () => {
    expect(wakeAtCs(1_000, 500)).toBe(1_050);
    expect(wakeAtCs(1_000, 1)).toBe(1_001);
    expect(wakeAtCs(1_000, -20)).toBe(1_000);
    expect(wakeAtCs(1_000, Infinity)).toBe(1_000 + 360_000);
  });

  test.skipIf(!has("shellcheck"))("the loop is shellcheck-clean POSIX sh", () => {
    const result = spawnSync("shellcheck", ["-s", "sh", "-"], { input: KEEPER_SCRIPT });
    expect(result.stdout.toString() + result.stderr.toString()).toBe("");
    expect(result.status).toBe(0);
  });

  test("its argv names it as the update-loop for /proc checks, then where the setup's first step left off", () => {
    const watched = { seen: '{"pid":42}', watch: { pid: 42, processStartTime: "b/777" }, wakeAtCs: 10.5, updateAtCs: 3_000 };
    expect(keeperShellArgv("/h/berth", "1.0.0", watched, 300_000, 1000).slice(3)).toEqual(["update-loop", "/h/berth", "1.0.0", '{"pid":42}', "42", "777", "11", "3000", "30000", "1000"]);
    expect(keeperShellArgv("/h/berth", "1.0.0", { seen: "", wakeAtCs: 5, updateAtCs: 6 }, 1_001, 0).slice(3)).toEqual(["update-loop", "/h/berth", "1.0.0", "", "0", "0", "5", "6", "101", "0"]);
    // A keeper step may restart once: the pidfile lock's wait and the start timeout, with room to spare; never under 5 min.
    expect(keeperStepMaxMs(10_000)).toBe(300_000);
    expect(keeperStepMaxMs(600_000)).toBe(600_000 + 15_000 + 60_000);
  });

  test("the update verdict and the pidfile line as `read -r` sees it", () => {
    expect(updateVerdictLine({ token: "u.1", wakeAtCs: 99.1, version: "fallback" })).toBe("u.1 100 fallback\n");
    const cases: [string | undefined, string][] = [[undefined, ""], ["", ""], ['{"pid":1}\n', '{"pid":1}'], [" \t{\"a\"} \nnext", '{"a"}']];
    for (const [text, line] of cases) expect(firstLine(text)).toBe(line);
    // What the loop compares each tick: the pidfile's line and the wish's line together.
    expect(watchedLine('{"pid":1}\n', '{"appServer":"running"}\n')).toBe('{"pid":1}|{"appServer":"running"}');
    expect(watchedLine(undefined, undefined)).toBe("|");
    expect(watchedLine("", '{"appServer":"stopped"}')).not.toBe(watchedLine("", '{"appServer":"running"}'));
  });
});

describe("the sh keeper", () => {
  test("is a shell under the recorded identity, short in ps; SIGKILL of the app-server: it answers again", async () => {
    const home = newHome();
    const { server, keeper } = await bootstrapped(home);
    expect(realpathSync(`/proc/${keeper}/exe`)).toBe(realpathSync("/bin/sh"));
    const record = readJson(home.path("daemon/updater.pid"));
    expect(record).toEqual({ pid: keeper, processStartTime: processIdentity(keeper) });
    expect(pgrpOf(keeper)).toBe(keeper);
    // ps shows `sh -c eval … update-loop <binary> <version> …`, not the script (it comes in KEEPER_SCRIPT_ENV).
    const argv = processArgv(keeper) ?? [];
    expect(argv.slice(0, 4)).toEqual(["/bin/sh", "-c", `eval "\${${KEEPER_SCRIPT_ENV}:?}"`, "update-loop"]);
    expect(argv.join(" ")).not.toContain("set -u");
    expect(argv.join(" ").length).toBeLessThan(1_000);
    // status reports the loop and the version of the binary that exec'd it.
    expect((await home.run(["status"])).json.updater).toMatchObject({ state: "running", pid: keeper, version: "0.1.0" });

    process.kill(server, "SIGKILL");
    let next: number | undefined;
    expect(await eventually(async () => {
      next = await answeringPid(home);
      return next !== undefined && next !== server;
    }, ANSWER_WAIT_MS, 10)).toBe(true);
    expect(serversOf(home)).toEqual([next as number]);
    // The loop unset the script first: the server its step started has the loop's environment without it.
    expect(processEnvValue(next as number, "BERTH_HOME")).toBe(home.home);
    expect(processEnvValue(next as number, KEEPER_SCRIPT_ENV)).toBeUndefined();
    // The step writes its verdict once the new server answered.
    expect(await eventually(() => readJson(home.path("daemon/keeper.json")).restarts === 1)).toBe(true);
    expect(readJson(home.path("daemon/keeper.json"))).toMatchObject({ state: "running", watching: { pid: next } });
  }, SLOW_TEST_MS);

  test("SIGTERM to the loop alone: gone at once, its sleep too; the app-server stays", async () => {
    const home = newHome();
    const { server, keeper } = await bootstrapped(home);
    process.kill(keeper, "SIGTERM");
    expect(await eventually(() => !isAlive(keeper), LOOP_END_WAIT_MS, 10)).toBe(true);
    expect(await eventually(() => groupMembers(keeper).length === 0, LOOP_END_WAIT_MS)).toBe(true);
    expect(processesOf(home.home)).toEqual([server]);
  }, SLOW_TEST_MS);

  test("SIGTERM while a step runs: the step's whole tree ends with the loop, not after it", async () => {
    const home = newHome();
    const { server, keeper } = await bootstrapped(home);
    const marker = join(home.home, "..", "steps");
    // Every step of this release first sleeps 30 s (a child of the step, like a download).
    markedRelease(home, "0.2.0", marker, 'if [ "$1" = keeper-step ]; then sleep 30; fi\n');
    process.kill(server, "SIGKILL");
    expect(await eventually(() => readFileSync(marker, "utf8").includes("keeper-step"), ANSWER_WAIT_MS)).toBe(true);
    const step = Number(readFileSync(marker, "utf8").trim().split(" ")[0]);
    expect(pgrpOf(step)).toBe(keeper);
    process.kill(keeper, "SIGTERM");
    // Well before the step's 30 s: the loop told its group.
    expect(await eventually(() => !isAlive(keeper) && groupMembers(keeper).length === 0, 20_000, 20)).toBe(true);
    expect(isAlive(step)).toBe(false);
  }, SLOW_TEST_MS);

  test("each step runs the current managed binary: after a flip the next step is the new release's, and the loop re-executes from it", async () => {
    const home = newHome();
    const { server, keeper } = await bootstrapped(home);
    const marker = join(home.home, "..", "runs");
    writeFileSync(marker, "");
    const newBinary = markedRelease(home, "0.2.0", marker);
    // An event: the app-server is killed; the step that handles it is 0.2.0's, a child of the loop.
    process.kill(server, "SIGKILL");
    expect(await eventually(() => readFileSync(marker, "utf8").split("\n").some((line) => line.endsWith(" keeper-step")), ANSWER_WAIT_MS)).toBe(true);
    const [pid, ppid] = (readFileSync(marker, "utf8").split("\n").find((line) => line.endsWith(" keeper-step")) as string).split(" ").map(Number);
    expect(ppid).toBe(keeper);
    expect(pid).not.toBe(keeper);
    // The step ran another version than the loop's: the loop (same pid) re-executed `update-loop` from 0.2.0.
    expect(await eventually(() => loopBinaryOf(keeper) === realpathSync(newBinary), ANSWER_WAIT_MS)).toBe(true);
    expect(readFileSync(marker, "utf8")).toContain(`${keeper} `);
    expect(await eventually(async () => (await home.run(["status"])).json.updater?.version === "0.2.0", ANSWER_WAIT_MS)).toBe(true);
    expect(readJson(home.path("daemon/updater.pid")).pid).toBe(keeper);
  }, SLOW_TEST_MS);

  test("an update check runs the current binary: with auto-update on, the first check after a flip is the new release's", async () => {
    const home = newHome();
    const env = { BERTH_UPDATE_INITIAL_DELAY_MS: "6000", BERTH_UPDATE_INTERVAL_MS: "600000", BERTH_RELEASE_BASE_URL: "http://127.0.0.1:9/none" };
    const { keeper } = await bootstrapped(home, env, []);
    const marker = join(home.home, "..", "runs");
    writeFileSync(marker, "");
    markedRelease(home, "0.2.0", marker);
    // No event but the check's deadline: the update step that runs it is 0.2.0's, and it records the check.
    expect(await eventually(() => /check: failed: /.test(readFileSync(home.path("daemon/updater.log"), "utf8")), ANSWER_WAIT_MS)).toBe(true);
    const steps = readFileSync(marker, "utf8").split("\n").filter((line) => line.endsWith(" update-step"));
    expect(steps.length).toBeGreaterThanOrEqual(1);
    expect(Number((steps[0] as string).split(" ")[1])).toBe(keeper);
    expect((await home.run(["status"])).json.updater.lastCheck).toMatchObject({ outcome: "failed" });
  }, SLOW_TEST_MS);

  test("a current release that hangs instead of running a step: killed at the step's deadline, the loop's own binary keeps", async () => {
    const home = newHome({ settings: { startTimeoutMs: 1_500 } });
    const { server, keeper } = await bootstrapped(home);
    const marker = join(home.home, "..", "runs");
    writeFileSync(marker, "");
    // Neither its steps nor its server ever get to berth's code.
    installRelease(home.home, "0.2.0", `#!/bin/sh\necho "$$ $*" >> '${marker}'\nexec sleep 600\n`);
    process.kill(server, "SIGKILL");
    const log = () => readFileSync(home.path("daemon/updater.log"), "utf8");
    // The hung step is killed; the loop's own 0.1.0 runs that step: it restarts 0.2.0, which hangs as a
    // server too, so the restart fails like a crash (backoff), and nothing hung is left behind.
    expect(await eventually(() => /loop: \S+ exited 137; this step runs berth 0\.1\.0 instead/.test(log()), 40_000)).toBe(true);
    expect(await eventually(() => readJson(home.path("daemon/keeper.json")).crashes.length >= 2, 40_000)).toBe(true);
    const hung = readFileSync(marker, "utf8").split("\n").filter((line) => line.endsWith(" keeper-step")).map((line) => Number(line.split(" ")[0]));
    expect(hung.length).toBeGreaterThanOrEqual(1);
    expect(await eventually(() => hung.every((pid) => !isAlive(pid)), 20_000)).toBe(true);
    expect(isAlive(keeper)).toBe(true);
    // A working release again: the next attempt brings the app-server back.
    installRelease(home.home, "0.3.0");
    expect(await eventually(async () => (await answeringPid(home)) !== undefined, 60_000, 100)).toBe(true);
    expect(readJson(home.path("daemon/updater.pid")).pid).toBe(keeper);
  }, 150_000);

  test("a current release someone else could have replaced is never run by the loop; its own binary keeps", async () => {
    const home = newHome();
    const { server, keeper } = await bootstrapped(home);
    const marker = join(home.home, "..", "planted-ran");
    const planted = installRelease(home.home, "0.2.0", `#!/bin/sh\ntouch '${marker}'\nexec sleep 600\n`);
    chmodSync(dirname(planted), 0o777);
    process.kill(server, "SIGKILL");
    const log = () => readFileSync(home.path("daemon/updater.log"), "utf8");
    // The loop's own 0.1.0 ran the step; its restart refused the unsafe binary (UNSAFE_STATE), a failed start.
    expect(await eventually(() => /loop: \S+ is missing or not safe to run; this step runs berth 0\.1\.0 instead/.test(log()), ANSWER_WAIT_MS)).toBe(true);
    expect(await eventually(() => /restart failed: .*writable by group or others/.test(log()), ANSWER_WAIT_MS)).toBe(true);
    expect(existsSync(marker)).toBe(false);
    expect(isAlive(keeper)).toBe(true);
    // Fixed (mode 0755 again, after checking its content): the current release runs again, and brings the server back.
    rmSync(marker, { force: true });
    installRelease(home.home, "0.3.0");
    expect(await eventually(async () => (await answeringPid(home)) !== undefined, 60_000, 100)).toBe(true);
    expect(existsSync(marker)).toBe(false);
  }, SLOW_TEST_MS);

  test.skipIf(!has("strace"))("idle, the loop forks nothing but sleep", async () => {
    const home = newHome();
    const { keeper } = await bootstrapped(home);
    const out = join(home.home, "..", "trace");
    const strace = Bun.spawn({ cmd: ["strace", "-f", "-qq", "-e", "trace=execve", "-o", out, "-p", String(keeper)], stdout: "ignore", stderr: "ignore" });
    const traced = () => (existsSync(out) ? readFileSync(out, "utf8").split("\n").filter((line) => line.includes("execve(")) : []);
    try {
      // The whole window, then on until three ticks were traced: a loaded machine stretches them (strace writes each line as it goes).
      await Bun.sleep(TRACE_WINDOW_MS);
      await eventually(() => traced().length >= 3, ANSWER_WAIT_MS);
    } finally {
      strace.kill("SIGINT");
      await strace.exited;
    }
    const execs = traced();
    // A 0.5 s tick: several sleeps in the window, and nothing else.
    expect(execs.length).toBeGreaterThanOrEqual(3);
    for (const line of execs) expect(line).toMatch(/execve\("[^"]*\/sleep", \["sleep", "0\.5"\]/);
  }, SLOW_TEST_MS);

  /**
   * Replaces the bootstrapped dash loop by the same script started by hand under `shell` (its own group, as a
   * launch gives it), with "-" as the line seen (its first tick runs a keeper step; no update step for an hour).
   * `before` runs once the old loop is gone; `body` gets the loop's pid and its verdict; the loop is then ended and
   * must leave nothing behind.
   */
  async function withHandLoop(home: TestHome, keeper: number, shell: string[], body: (pid: number, verdict: () => string) => Promise<void>, before?: () => Promise<void>) {
    process.kill(keeper, "SIGTERM");
    expect(await eventually(() => !isAlive(keeper), LOOP_END_WAIT_MS)).toBe(true);
    await before?.();
    const own = realpathSync(home.path("packages/standalone/current/berth"));
    const [, ...rest] = keeperShellArgv(own, "0.1.0", { seen: "-", wakeAtCs: 0, updateAtCs: 1e12 }, keeperStepMaxMs(10_000), process.getuid?.() ?? 0);
    const loop = Bun.spawn({ cmd: [...shell, ...rest], env: keeperShellEnv(home.env), stdin: "ignore", stdout: "ignore", stderr: "ignore", detached: true });
    try {
      const verdict = () => readFileSync(home.path("daemon/keeper-next"), "utf8");
      // Its own first step (the token names its pid) has answered.
      expect(await eventually(() => verdict().startsWith(`k.${loop.pid}.`) && !verdict().includes("started"), ANSWER_WAIT_MS)).toBe(true);
      await body(loop.pid, verdict);
    } finally {
      loop.kill("SIGTERM");
      await loop.exited;
    }
    expect(await eventually(() => groupMembers(loop.pid).length === 0, LOOP_END_WAIT_MS)).toBe(true);
  }

  async function killedServerAnswersAgain(home: TestHome, server: number) {
    process.kill(server, "SIGKILL");
    expect(await eventually(async () => {
      const next = await answeringPid(home);
      return next !== undefined && next !== server;
    }, ANSWER_WAIT_MS, 10)).toBe(true);
  }

  for (const shell of [["busybox", "sh"], ["bash", "--posix"]]) {
    test.skipIf(!has(shell[0] as string))(`the same loop under ${shell.join(" ")} keeps the app-server`, async () => {
      const home = newHome();
      const { server, keeper } = await bootstrapped(home);
      await withHandLoop(home, keeper, shell, async (pid, verdict) => {
        expect(verdict()).toMatch(new RegExp(`^k\\.${pid}\\.\\d+\\.\\d+ ${server} \\d+ \\d+ 0\\.1\\.0\\n$`));
        await killedServerAnswersAgain(home, server);
      });
    }, SLOW_TEST_MS);
  }

  test("a wish written after the keeper's last look (bootstrap writes it after launching the loop) is seen: a later crash is restarted", async () => {
    const home = newHome();
    const { server, keeper } = await bootstrapped(home);
    const wish = (appServer: string) => writeFileSync(home.path("daemon/wanted.json"), `${JSON.stringify({ appServer, since: new Date().toISOString() })}\n`);
    // The loop's first look happens while the wish still says stopped: it watches nothing and sleeps long.
    await withHandLoop(home, keeper, ["dash"], async (pid, verdict) => {
      expect(verdict()).toMatch(new RegExp(`^k\\.${pid}\\.\\d+\\.\\d+ 0 0 \\d+ 0\\.1\\.0\\n$`));
      // Then the wish is written, with nothing else changing; the server crashes later.
      wish("running");
      expect(await eventually(() => new RegExp(` ${server} \\d+ \\d+ 0\\.1\\.0\\n$`).test(verdict()), ANSWER_WAIT_MS)).toBe(true);
      await killedServerAnswersAgain(home, server);
    }, async () => wish("stopped"));
  }, SLOW_TEST_MS);

  test("where no sh loop runs (BERTH_KEEPER_IN_PROCESS, as on macOS) the same steps keep the app-server in Bun", async () => {
    const home = newHome();
    const result = await home.run(["bootstrap", "--no-auto-update"], { env: { BERTH_KEEPER_IN_PROCESS: "1" } });
    const { pid: server, updater } = result.json as { pid: number; updater: { pid: number } };
    expect(await eventually(() => readFileSync(home.path("daemon/updater.log"), "utf8").includes(`watching app-server pid ${server}`), ANSWER_WAIT_MS)).toBe(true);
    expect(loopBinaryOf(updater.pid)).toBeUndefined();
    process.kill(server, "SIGKILL");
    expect(await eventually(async () => {
      const next = await answeringPid(home);
      return next !== undefined && next !== server;
    }, ANSWER_WAIT_MS, 10)).toBe(true);
    expect(loopBinaryOf(updater.pid)).toBeUndefined();
  }, SLOW_TEST_MS);
});
