/**
 * A repeatable storm against one BERTH_HOME: racing lifecycle commands with
 * faults injected between rounds (issue 8's attacks), checking after every
 * round what must always hold. Reports operations, faults and outcomes as one
 * JSON object on stdout (a table on stderr); nothing is asserted on time.
 *
 *   bun test/storm.ts [--rounds 40] [--parallel 4] [--seed 1]
 *
 * Exits 1 only when an invariant broke (a foreign process died, two servers
 * ran, a command printed other than one JSON object, or INTERNAL came out).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { layoutFor } from "../src/platform/paths.ts";
import { BUN, ROOT, isAlive, makeHome, processesOf, type TestHome } from "./helpers/berth.ts";

/** A fake server or a planted link stays this many rounds before the storm removes it. */
const FAULT_ROUNDS = 1;
const COMMAND_TIMEOUT_MS = 60_000;

const { values } = parseArgs({
  options: { rounds: { type: "string", default: "40" }, parallel: { type: "string", default: "4" }, seed: { type: "string", default: "1" } },
});
const rounds = Number(values.rounds);
const parallel = Number(values.parallel);
let seed = Number(values.seed) >>> 0 || 1;
/** xorshift32: the same seed gives the same storm. */
function random(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x1_0000_0000;
}
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;

const COMMANDS = [["start"], ["stop"], ["restart"], ["status"], ["version"], ["bootstrap", "--no-auto-update"]] as const;
const FAULTS = ["none", "kill -9 server", "stale updater record on a foreign group", "fake server claiming a sleep", "symlinked daemon.lock", "corrupt pidfile", "FIFO settings.json"] as const;

const home: TestHome = makeHome({ prefix: "berth-storm-" });
const layout = layoutFor(home.home);
const strangers: number[] = [];
const cleanups: (() => void)[] = [];
const outcomes: Record<string, Record<string, number>> = {};
const faults: Record<string, number> = {};
const violations: string[] = [];
let operations = 0;

function count(table: Record<string, number>, key: string): void {
  table[key] = (table[key] ?? 0) + 1;
}

function serveProcesses(): number[] {
  return processesOf(home.home).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes("serve");
    } catch {
      return false;
    }
  });
}

function sleeper(): number {
  const child = Bun.spawn({ cmd: ["sleep", "1000"], stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  strangers.push(child.pid);
  return child.pid;
}

async function leaderlessGroup(): Promise<number> {
  const child = Bun.spawn({ cmd: ["setsid", "sh", "-c", "sleep 1000 >/dev/null & echo $!; sleep 1000 >/dev/null & echo $!; exit 0"], stdin: "ignore", stdout: "pipe", stderr: "ignore" });
  const text = await new Response(child.stdout).text();
  strangers.push(...text.trim().split("\n").map(Number));
  return child.pid;
}

async function inject(fault: (typeof FAULTS)[number]): Promise<void> {
  count(faults, fault);
  mkdirSync(layout.daemonDir, { recursive: true, mode: 0o700 });
  switch (fault) {
    case "none":
      return;
    case "kill -9 server":
      // Only the processes the storm's own home launched (proven by processesOf: its BERTH_HOME).
      for (const pid of serveProcesses()) process.kill(pid, "SIGKILL");
      return;
    case "stale updater record on a foreign group": {
      const pgid = await leaderlessGroup();
      writeFileSync(layout.updaterPid, JSON.stringify({ pid: pgid, processStartTime: "00000000-0000-0000-0000-000000000000/1" }));
      return;
    }
    case "fake server claiming a sleep": {
      if (serveProcesses().length > 0 || existsSync(layout.defaultSocket)) return;
      const fake = Bun.spawn({
        cmd: [BUN, join(ROOT, "test", "fixtures", "fake-server.ts"), layout.defaultSocket],
        env: { ...home.env, FAKE_CLAIM_PID: String(sleeper()) },
        stdin: "ignore",
        stdout: "ignore",
        stderr: "ignore",
      });
      cleanups.push(() => {
        fake.kill("SIGKILL");
        rmSync(layout.defaultSocket, { force: true });
      });
      for (let i = 0; i < 200 && !existsSync(layout.defaultSocket); i += 1) await Bun.sleep(10);
      return;
    }
    case "symlinked daemon.lock": {
      const target = join(home.home, "..", "lock-target");
      rmSync(layout.daemonLock, { force: true });
      symlinkSync(target, layout.daemonLock);
      cleanups.push(() => {
        rmSync(layout.daemonLock, { force: true });
        if (existsSync(target)) violations.push(`a daemon.lock symlink was followed: ${target} was created`);
      });
      return;
    }
    case "corrupt pidfile":
      if (serveProcesses().length === 0) writeFileSync(layout.appServerPid, "{\"pid\":");
      return;
    case "FIFO settings.json": {
      rmSync(layout.settingsFile, { force: true });
      Bun.spawnSync(["mkfifo", "-m", "600", layout.settingsFile]);
      cleanups.push(() => rmSync(layout.settingsFile, { force: true }));
      return;
    }
  }
}

async function runOne(args: readonly string[]): Promise<void> {
  operations += 1;
  const name = args.join(" ");
  outcomes[name] ??= {};
  const result = await home.run([...args], { timeoutMs: COMMAND_TIMEOUT_MS });
  const lines = result.stdout.trim().split("\n").filter((line) => line.trim() !== "");
  if (lines.length !== 1 || result.json === undefined) {
    violations.push(`${name}: stdout had ${lines.length} lines (exit ${result.code})`);
    count(outcomes[name], "bad output");
    return;
  }
  const code = result.json.status === "error" ? result.json.error.code : result.json.status;
  if (code === "INTERNAL") violations.push(`${name}: INTERNAL ${result.json.error.message}`);
  count(outcomes[name], code);
}

function checkInvariants(round: number): void {
  const servers = serveProcesses();
  if (servers.length > 1) violations.push(`round ${round}: ${servers.length} servers ran at once (${servers.join(", ")})`);
  for (const pid of strangers) if (!isAlive(pid)) violations.push(`round ${round}: foreign process ${pid} was killed`);
}

try {
  for (let round = 0; round < rounds; round += 1) {
    await inject(pick(FAULTS));
    await Promise.all(Array.from({ length: parallel }, () => runOne(pick(COMMANDS))));
    checkInvariants(round);
    if (round % (FAULT_ROUNDS + 1) === FAULT_ROUNDS) for (const cleanup of cleanups.splice(0)) cleanup();
  }
  for (const cleanup of cleanups.splice(0)) cleanup();
  await runOne(["stop"]);
} finally {
  for (const pid of strangers) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  await home.cleanup();
}

const report = { rounds, parallel, seed: Number(values.seed), operations, faultsInjected: faults, outcomes, violations };
process.stderr.write(`storm: ${operations} operations, ${rounds} rounds of ${parallel}, seed ${values.seed}\n`);
process.stderr.write(`| fault | injected |\n| --- | --- |\n${Object.entries(faults).map(([k, v]) => `| ${k} | ${v} |`).join("\n")}\n`);
process.stderr.write(`| command | outcomes |\n| --- | --- |\n${Object.entries(outcomes).map(([k, v]) => `| ${k} | ${Object.entries(v).map(([o, n]) => `${o} ${n}`).join(", ")} |`).join("\n")}\n`);
process.stderr.write(violations.length === 0 ? "violations: none\n" : `violations:\n${violations.join("\n")}\n`);
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exitCode = violations.length === 0 ? 0 : 1;
