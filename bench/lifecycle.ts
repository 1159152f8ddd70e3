#!/usr/bin/env bun
/**
 * Lifecycle benchmark of the compiled binary: wall time of start, version,
 * stop, restart and the CLI's cold start, idle RSS of the app-server and of
 * the updater. Prints a markdown table next to the targets; never fails a
 * build (always exits 0). Run: `npm run bench` (bun run bench/lifecycle.ts).
 * Env: BENCH_RUNS (default 25).
 */
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { compile } from "../build.ts";
import { CLI_TARGET } from "../src/version.ts";

const VERSION = "0.0.0-bench";
const RUNS = Number(process.env.BENCH_RUNS) || 25;
const COMMAND_TIMEOUT_MS = 90_000;
const IDLE_BEFORE_RSS_MS = 1_000;
const RSS_SAMPLES = 5;
const RSS_SAMPLE_INTERVAL_MS = 200;
const UPDATER_IDLE_DELAY_MS = 3_600_000;

type Stats = { median: number; p90: number; min: number };
type Row = { name: string; target?: { value: number; unit: "ms" | "MB" }; stats?: Stats; error?: string };
type Run = { code: number; stdout: string; stderr: string; ms: number };

const base = mkdtempSync(join(tmpdir(), "berth-bench-"));
const home = join(base, "home");
const binary = join(base, "berth");
const floorBinary = join(base, "empty");
const env: Record<string, string> = {
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: base,
  BERTH_HOME: home,
  BERTH_INSTALL_DIR: join(base, "bin"),
  NO_COLOR: "1",
};

function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
  return { median: at(0.5), p90: at(0.9), min: sorted[0] as number };
}

/** Spawns a command with piped stdout/stderr read to EOF; the time is spawn → exit + EOF. */
async function timed(cmd: string[], extraEnv: Record<string, string> = {}): Promise<Run> {
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

/** Runs `berth <args>` and insists on exit 0 and one of the expected statuses. */
async function berth(args: string[], statuses: string[], extraEnv: Record<string, string> = {}): Promise<Run & { json: any }> {
  const run = await timed([binary, ...args], extraEnv);
  const json = lastJson(run);
  if (run.code !== 0 || !statuses.includes(json?.status)) {
    throw new Error(`berth ${args.join(" ")} exited ${run.code}: ${run.stdout.trim()} ${run.stderr.trim()}`);
  }
  return { ...run, json };
}

/** `berth --version`: plain text, no JSON. */
async function versionFlag(): Promise<Run> {
  const run = await timed([binary, "--version"]);
  if (run.code !== 0 || run.stdout.trim() !== VERSION) throw new Error(`berth --version exited ${run.code}: ${run.stdout.trim()}`);
  return run;
}

async function sample(runs: number, setup: () => Promise<unknown>, measure: () => Promise<Run>): Promise<Stats> {
  const samples: number[] = [];
  for (let i = 0; i < runs; i += 1) {
    await setup();
    samples.push((await measure()).ms);
  }
  return stats(samples);
}

function vmRssMb(pid: number): number {
  const match = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+)\s+kB/m);
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) / 1024;
}

async function idleRss(pid: number): Promise<Stats> {
  await Bun.sleep(IDLE_BEFORE_RSS_MS);
  const samples: number[] = [];
  for (let i = 0; i < RSS_SAMPLES; i += 1) {
    samples.push(vmRssMb(pid));
    await Bun.sleep(RSS_SAMPLE_INTERVAL_MS);
  }
  return stats(samples);
}

/** Every live process that runs with this bench's BERTH_HOME (app-server, updater, stragglers). */
function benchProcesses(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, "utf8").split("\0").includes(`BERTH_HOME=${home}`)) pids.push(Number(entry));
    } catch {
      // exited meanwhile, or not ours to read
    }
  }
  return pids;
}

let cleaned = false;
async function cleanup(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  try {
    await timed([binary, "stop"]);
  } catch {
    // the binary may not exist if the build failed
  }
  for (const pid of benchProcesses()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  rmSync(base, { recursive: true, force: true });
}

function installManaged(): void {
  if (!CLI_TARGET) throw new Error("this machine is not a release target");
  const releaseDir = join(home, "packages", "standalone", "releases", `${VERSION}-${CLI_TARGET}`);
  mkdirSync(releaseDir, { recursive: true, mode: 0o700 });
  copyFileSync(binary, join(releaseDir, "berth"));
  chmodSync(join(releaseDir, "berth"), 0o755);
  symlinkSync(`releases/${VERSION}-${CLI_TARGET}`, join(home, "packages", "standalone", "current"));
  mkdirSync(join(home, "daemon"), { recursive: true, mode: 0o700 });
  writeFileSync(join(home, "daemon", "settings.json"), JSON.stringify({ releaseBaseUrl: "" }), { mode: 0o600 });
}

function renderTable(rows: Row[]): string {
  const lines = [
    "| measure | target | median | p90 | min | meets target |",
    "| --- | ---: | ---: | ---: | ---: | :---: |",
  ];
  for (const row of rows) {
    const unit = row.target?.unit ?? (row.name.includes("RSS") ? "MB" : "ms");
    const target = row.target ? `≤ ${row.target.value} ${unit}` : "—";
    if (!row.stats) {
      lines.push(`| ${row.name} | ${target} | failed: ${row.error ?? "?"} | | | ✗ |`);
      continue;
    }
    const { median, p90, min } = row.stats;
    const verdict = row.target ? (median <= row.target.value ? "yes" : "**no**") : "—";
    lines.push(`| ${row.name} | ${target} | ${median.toFixed(1)} ${unit} | ${p90.toFixed(1)} ${unit} | ${min.toFixed(1)} ${unit} | ${verdict} |`);
  }
  return lines.join("\n");
}

async function row(rows: Row[], spec: Omit<Row, "stats" | "error">, measure: () => Promise<Stats>): Promise<void> {
  process.stderr.write(`bench: ${spec.name}…\n`);
  try {
    rows.push({ ...spec, stats: await measure() });
  } catch (error) {
    rows.push({ ...spec, error: (error instanceof Error ? error.message : String(error)).replace(/\s+/g, " ").slice(0, 200) });
  }
}

async function main(): Promise<void> {
  const buildStarted = performance.now();
  await compile({ version: VERSION, outfile: binary });
  // Bun's own floor: a compiled program that does nothing (or, given `idle`, just stays up).
  const emptyEntry = join(base, "empty.ts");
  writeFileSync(emptyEntry, 'if (process.argv[2] === "idle") setInterval(() => {}, 1 << 30);\n');
  const floor = await Bun.build({ entrypoints: [emptyEntry], compile: { outfile: floorBinary, autoloadBunfig: false, autoloadDotenv: false } });
  process.stderr.write(`bench: compiled in ${((performance.now() - buildStarted) / 1000).toFixed(1)} s; ${RUNS} runs per row\n`);
  installManaged();

  const rows: Row[] = [];
  const start = () => berth(["start"], ["started", "alreadyRunning"]);
  const stop = () => berth(["stop"], ["stopped", "notRunning"]);

  await row(rows, { name: "`--version` (CLI cold start)" }, () => sample(RUNS, async () => {}, versionFlag));
  if (floor.success) {
    await row(rows, { name: "Bun floor: compiled empty program" }, () => sample(RUNS, async () => {}, () => timed([floorBinary])));
    await row(rows, { name: "Bun floor: idle compiled program RSS" }, async () => {
      // Carries BERTH_HOME in its environment, so cleanup() finds it even if this throws.
      const idle = Bun.spawn({ cmd: [floorBinary, "idle"], env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
      try {
        return await idleRss(idle.pid);
      } finally {
        idle.kill("SIGKILL");
        await idle.exited;
      }
    });
  }
  await row(rows, { name: "`start` (nothing → ready)", target: { value: 30, unit: "ms" } }, () =>
    sample(RUNS, stop, () => berth(["start"], ["started"])),
  );
  await row(rows, { name: "`version` (server running)", target: { value: 10, unit: "ms" } }, async () => {
    await start();
    return sample(RUNS, async () => {}, () => berth(["version"], ["running"]));
  });
  await row(rows, { name: "`stop`", target: { value: 30, unit: "ms" } }, () =>
    sample(RUNS, start, () => berth(["stop"], ["stopped"])),
  );
  await row(rows, { name: "`restart` (server running)", target: { value: 60, unit: "ms" } }, async () => {
    await start();
    return sample(RUNS, async () => {}, () => berth(["restart"], ["restarted"]));
  });
  await row(rows, { name: "app-server idle RSS", target: { value: 25, unit: "MB" } }, async () => {
    const { json } = await start();
    return idleRss(json.pid as number);
  });
  await row(rows, { name: "updater (`update-loop`) idle RSS", target: { value: 16, unit: "MB" } }, async () => {
    await berth(["bootstrap"], ["bootstrapped"], { BERTH_UPDATE_INITIAL_DELAY_MS: String(UPDATER_IDLE_DELAY_MS) });
    const record = JSON.parse(readFileSync(join(home, "daemon", "updater.pid"), "utf8")) as { pid: number };
    return idleRss(record.pid);
  });

  const cpu = cpus()[0]?.model ?? "unknown CPU";
  console.log(`\nberth ${VERSION} (${CLI_TARGET}), Bun ${Bun.version}, ${cpus().length} × ${cpu}, ${new Date().toISOString().slice(0, 10)}, ${RUNS} runs per timing row\n`);
  console.log(renderTable(rows));
}

process.on("SIGINT", () => {
  void cleanup().finally(() => process.exit(0));
});

try {
  await main();
} catch (error) {
  console.error(`bench: failed: ${error instanceof Error ? error.message : String(error)}`);
} finally {
  await cleanup();
}
process.exit(0);
