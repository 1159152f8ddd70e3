/**
 * The compiled binary, as users get it: a fresh `bun build --compile` of
 * src/main.ts (build.ts `compile`), every subcommand's --help, usage errors,
 * and one full start → version → status → restart → stop with the compiled
 * file itself as the managed binary, so the app-server process IS that file.
 * Catches what only breaks under --compile: lazy imports, process.argv shape,
 * autoloaded bunfig.toml/.env.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, chmodSync, existsSync, mkdirSync, readlinkSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { commands } from "../src/commands/index.ts";
import { eventually, homesPerTest, installRelease, isAlive, keepersOf, loopBinaryOf, nonKeeperProcessesOf, parseLastJsonLine, runProcess, type RunResult } from "./helpers/berth.ts";
import { compiledPerFile } from "./helpers/compiled.ts";
import { spawnConnect } from "./helpers/connect.ts";

const VERSION = "9.8.7";
const HIDDEN_COMMANDS = new Set(["update-loop"]);

const compiled = compiledPerFile(beforeAll, afterAll, { version: VERSION, prefix: "berth-binary-" });

const newHome = homesPerTest(afterEach);

/** A minimal environment with no BERTH_HOME of the developer's leaking in. */
function bareEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: compiled.dir, NO_COLOR: "1", ...extra };
}

/** Copies the compiled binary into `releases/<version>-<target>/berth` and points `current` at it. */
function installCompiled(home: string, version: string): string {
  const binary = installRelease(home, version, "");
  copyFileSync(compiled.berth, binary);
  chmodSync(binary, 0o755);
  return binary;
}

/** Runs the compiled binary from a given working directory. */
async function runIn(cwd: string, args: string[], env: Record<string, string>): Promise<RunResult> {
  const child = Bun.spawn({ cmd: [compiled.berth, ...args], cwd, env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { code, stdout, stderr, json: parseLastJsonLine(stdout) };
}

describe("the compiled binary's CLI surface", () => {
  test("--version prints the version baked in at build time", async () => {
    const result = await runProcess([compiled.berth, "--version"], bareEnv());
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe(VERSION);
  });

  test("--help exits 0 and lists every public command, not the hidden ones", async () => {
    const result = await runProcess([compiled.berth, "--help"], bareEnv());
    expect(result.code).toBe(0);
    for (const name of Object.keys(commands)) {
      if (HIDDEN_COMMANDS.has(name)) expect(result.stdout).not.toContain(name);
      else expect(result.stdout).toContain(name);
    }
  });

  for (const name of Object.keys(commands)) {
    test(`${name} --help exits 0 with usage on stdout`, async () => {
      const result = await runProcess([compiled.berth, name, "--help"], bareEnv());
      expect(result.code).toBe(0);
      expect(result.stdout).toContain("USAGE");
      expect(result.stdout).toContain(`berth ${name}`);
    });
  }

  test("an unknown command: exit 2, exactly one JSON line with error.code USAGE", async () => {
    const result = await runProcess([compiled.berth, "no-such-command"], bareEnv());
    expect(result.code).toBe(2);
    const lines = result.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ status: "error", error: { code: "USAGE" } });
    expect(result.stderr).toContain("no-such-command");
  });
});

describe("the compiled binary as the managed binary", () => {
  test("start → version → status → restart → stop, with the app-server being the compiled file", async () => {
    const home = newHome({ install: false });
    const managed = installCompiled(home.home, VERSION);
    const run = (args: string[]) => home.exec([compiled.berth, ...args]);

    const started = await run(["start"]);
    expect(started.code).toBe(0);
    expect(started.stdout.trim().split("\n")).toHaveLength(1);
    expect(started.json).toMatchObject({
      status: "started",
      backend: "pid",
      managedBinaryPath: home.path("packages/standalone/current/berth"),
      managedVersion: VERSION,
      cliVersion: VERSION,
      appServerVersion: VERSION,
    });
    const pid = started.json.pid as number;
    expect(readlinkSync(`/proc/${pid}/exe`)).toBe(realpathSync(managed));

    const version = await run(["version"]);
    expect(version.code).toBe(0);
    expect(version.json).toMatchObject({ status: "running", backend: "pid", pid, appServerVersion: VERSION });

    const status = await run(["status"]);
    expect(status.code).toBe(0);
    expect(status.json).toMatchObject({
      status: "running",
      berthHome: home.home,
      managedVersion: VERSION,
      appServer: { state: "running", pid, version: VERSION, answering: true },
    });

    const restarted = await run(["restart"]);
    expect(restarted.code).toBe(0);
    expect(restarted.json).toMatchObject({ status: "restarted", backend: "pid", appServerVersion: VERSION });
    const newPid = restarted.json.pid as number;
    expect(newPid).not.toBe(pid);
    expect(isAlive(pid)).toBe(false);
    expect(readlinkSync(`/proc/${newPid}/exe`)).toBe(realpathSync(managed));

    const stopped = await run(["stop"]);
    expect(stopped.code).toBe(0);
    expect(stopped.json).toMatchObject({ status: "stopped" });
    expect(isAlive(newPid)).toBe(false);
    // Only the keeper stays after `stop` (spec "Supervision"): the sh loop the compiled file exec'd into.
    const keepers = keepersOf(home);
    expect(keepers).toHaveLength(1);
    expect(await eventually(() => loopBinaryOf(keepers[0] as number) === realpathSync(managed))).toBe(true);
    expect(readlinkSync(`/proc/${keepers[0]}/exe`)).toBe(realpathSync("/bin/sh"));
    expect(nonKeeperProcessesOf(home)).toEqual([]);
    expect(existsSync(home.path("daemon/app-server.pid"))).toBe(false);
  });

  test("a bunfig.toml and .env in the working directory are not loaded", async () => {
    const home = newHome({ install: false });
    installCompiled(home.home, VERSION);
    const hostile = join(home.home, "..", "hostile");
    mkdirSync(hostile);
    const marker = join(hostile, "preloaded");
    writeFileSync(join(hostile, "bunfig.toml"), 'preload = ["./boom.ts"]\n');
    writeFileSync(join(hostile, "boom.ts"), `require("node:fs").writeFileSync(${JSON.stringify(marker)}, "boom");\n`);
    // BERTH_RELEASE_BASE_URL is unset in the caller's env, so a loaded .env would show in status's settings.
    writeFileSync(join(hostile, ".env"), "BERTH_HOME=/nonexistent\nBERTH_RELEASE_BASE_URL=https://dotenv.invalid\n");

    const version = await runIn(hostile, ["--version"], home.env);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe(VERSION);
    expect(existsSync(marker)).toBe(false);

    const status = await runIn(hostile, ["status"], home.env);
    expect(status.code).toBe(0);
    expect(status.json).toMatchObject({ berthHome: home.home, managedVersion: VERSION });
    expect(status.json.settings.releaseBaseUrl).not.toContain("dotenv.invalid");
    expect(existsSync(marker)).toBe(false);

    // With BERTH_HOME unset, a loaded .env would win over the default ~/.berth.
    const { BERTH_HOME: _unset, ...withoutHome } = home.env;
    const defaulted = await runIn(hostile, ["status"], withoutHome);
    expect(defaulted.code).toBe(0);
    expect(defaulted.json.berthHome).toBe(join(home.env.HOME as string, ".berth"));
    expect(existsSync(marker)).toBe(false);
    expect(existsSync("/nonexistent")).toBe(false);
  });

  test("connect end to end: starts the compiled app-server, a terminal process survives the bridge, stop ends it (exit 75)", async () => {
    const home = newHome({ install: false, settings: { stopGraceMs: 3_000 } });
    installCompiled(home.home, VERSION);
    const first = spawnConnect(["sh", "-c", 'echo "motd noise"; exec "$0" connect', compiled.berth], home.env);
    const line = { ...(await first.waitConnected()) };
    expect(first.noise).toEqual(["motd noise"]);
    expect(line).toMatchObject({ status: "connected", protocol: 1, appServerVersion: VERSION, cliVersion: VERSION });
    expect(readlinkSync(`/proc/${line.pid}/exe`)).toBe(realpathSync(home.path("packages/standalone/current/berth")));
    await first.initialize();
    const { process: p } = await first.call("process/spawn", { argv: ["sh"], terminal: { cols: 100, rows: 30 }, name: "main" });
    first.send({ method: "process/write", params: { processId: p.processId, data: Buffer.from("stty size\n").toString("base64") } });
    expect(await eventually(() => first.output(p.processId, "terminal").text.includes("30 100"), 15_000)).toBe(true);
    first.proc.stdin.end();
    expect(await first.exited).toBe(0);

    const second = spawnConnect([compiled.berth, "connect", "--no-start"], home.env);
    await second.waitConnected();
    await second.initialize();
    expect((await second.call("process/list")).processes).toEqual([expect.objectContaining({ name: "main", state: "running" })]);
    const stopped = await home.exec([compiled.berth, "stop"]);
    expect(stopped.json).toMatchObject({ status: "stopped", processesEnded: 1 });
    expect(await second.exited).toBe(75);
    expect(isAlive(p.pid)).toBe(false);
    expect(nonKeeperProcessesOf(home)).toEqual([]);
  }, 60_000);
});
