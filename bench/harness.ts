/**
 * What both benches share: a temporary BERTH_HOME with a freshly compiled
 * berth as its managed release, timed child processes, medians, and a cleanup
 * that SIGKILLs every process still carrying that BERTH_HOME.
 */
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { compile, type BuildOptions } from "../build.ts";
import { CLI_TARGET } from "../src/version.ts";
import { berthEnv } from "../test/helpers/berth.ts";

export const VERSION = "0.0.0-bench";
const COMMAND_TIMEOUT_MS = 90_000;

export type Stats = { median: number; p90: number; min: number };
export type Run = { code: number; stdout: string; stderr: string; ms: number };

export function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
  return { median: at(0.5), p90: at(0.9), min: sorted[0] as number };
}

/** Spawns a command with piped stdout/stderr read to EOF; the time is spawn → exit + EOF. */
export async function timedIn(env: Record<string, string>, cmd: string[], extraEnv: Record<string, string> = {}): Promise<Run> {
  const started = performance.now();
  const child = Bun.spawn({ cmd, env: { ...env, ...extraEnv }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => child.kill("SIGKILL"), COMMAND_TIMEOUT_MS);
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  const ms = performance.now() - started;
  clearTimeout(timer);
  return { code, stdout, stderr, ms };
}

function lastJson(run: Run): any {
  try {
    return JSON.parse(run.stdout.trimEnd().split("\n").pop() ?? "");
  } catch {
    return undefined;
  }
}

/** Every live process whose environment holds `entry` (e.g. BERTH_HOME=…), except this one. */
/**
 * Every live member of process group `pgid`: the keeper is its group (the sh
 * loop and what it runs at that moment, e.g. its `sleep`), so its memory is theirs summed.
 */
export function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields[0] !== "Z" && Number(fields[2]) === pgid) members.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return members;
}

export function processesWithEnv(entry: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/environ`, "utf8").split("\0").includes(entry)) pids.push(Number(name));
    } catch {
      // exited meanwhile, or not ours to read
    }
  }
  return pids;
}

export function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

export type BenchHome = {
  base: string;
  home: string;
  binary: string;
  env: Record<string, string>;
  timed(cmd: string[], extraEnv?: Record<string, string>): Promise<Run>;
  /** Runs `berth <args>` and insists on exit 0 and one of the expected statuses (any status when none is given). */
  berth(args: string[], statuses: string[], extraEnv?: Record<string, string>): Promise<Run & { json: any }>;
  cleanup(): Promise<void>;
};

/**
 * Runs one bench script: makes its home (`makeBenchHome(prefix)`), runs `main`, and always ends with `end`
 * (by default the home's cleanup), on ^C too. A bench never fails a build: a failure is printed, the exit is 0.
 */
export async function runBench(name: string, prefix: string, main: (bench: BenchHome) => Promise<void>, end: (bench: BenchHome) => Promise<void> = (bench) => bench.cleanup()): Promise<never> {
  let bench: BenchHome | undefined;
  const finish = async () => {
    if (bench) await end(bench);
  };
  process.on("SIGINT", () => void finish().finally(() => process.exit(0)));
  try {
    const buildStarted = performance.now();
    bench = await makeBenchHome(prefix);
    process.stderr.write(`${name}: compiled in ${((performance.now() - buildStarted) / 1000).toFixed(1)} s\n`);
    await main(bench);
  } catch (error) {
    console.error(`${name}: failed: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    await finish();
  }
  process.exit(0);
}

/**
 * Compiles berth (or copies `prebuilt`, a berth binary, fresh: a copy's pages are in the page cache as a
 * new build's are) into a fresh temporary folder and installs it there as the managed release.
 */
export async function makeBenchHome(prefix: string, prebuilt?: string, build: Pick<BuildOptions, "bytecodeOrder"> = {}): Promise<BenchHome> {
  if (!CLI_TARGET) throw new Error("this machine is not a release target");
  const base = mkdtempSync(join(tmpdir(), prefix));
  const home = join(base, "home");
  const binary = join(base, "berth");
  const env = berthEnv(base, home);
  const timed = (cmd: string[], extraEnv: Record<string, string> = {}) => timedIn(env, cmd, extraEnv);
  let cleaned = false;
  const bench: BenchHome = {
    base,
    home,
    binary,
    env,
    timed,
    async berth(args, statuses, extraEnv = {}) {
      const run = await timed([binary, ...args], extraEnv);
      const json = lastJson(run);
      if (run.code !== 0 || (statuses.length > 0 && !statuses.includes(json?.status))) {
        throw new Error(`berth ${args.join(" ")} exited ${run.code}: ${run.stdout.trim()} ${run.stderr.trim()}`);
      }
      return { ...run, json };
    },
    async cleanup() {
      if (cleaned) return;
      cleaned = true;
      try {
        await timed([binary, "stop"]);
      } catch {
        // the binary may not exist if the build failed
      }
      killAll(processesWithEnv(`BERTH_HOME=${home}`));
      rmSync(base, { recursive: true, force: true });
    },
  };
  try {
    if (prebuilt) copyFileSync(prebuilt, binary);
    else await compile({ version: VERSION, outfile: binary, ...build });
    chmodSync(binary, 0o755);
    const releaseDir = join(home, "packages", "standalone", "releases", `${VERSION}-${CLI_TARGET}`);
    mkdirSync(releaseDir, { recursive: true, mode: 0o700 });
    copyFileSync(binary, join(releaseDir, "berth"));
    chmodSync(join(releaseDir, "berth"), 0o755);
    symlinkSync(`releases/${VERSION}-${CLI_TARGET}`, join(home, "packages", "standalone", "current"));
    mkdirSync(join(home, "daemon"), { recursive: true, mode: 0o700 });
    writeFileSync(join(home, "daemon", "settings.json"), JSON.stringify({ releaseBaseUrl: "" }), { mode: 0o600 });
  } catch (error) {
    await bench.cleanup();
    throw error;
  }
  return bench;
}

/** `2 × AMD EPYC` and friends, for the heading of a table. */
export function machineLine(): string {
  return `${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}`;
}
