#!/usr/bin/env bun
/**
 * Lifecycle benchmark of the compiled binary: wall time of start, version,
 * stop, restart and the CLI's cold start, idle RSS of the app-server and of
 * the updater. Prints a markdown table next to the targets; never fails a
 * build (always exits 0). Run: `npm run bench` (bun run bench/lifecycle.ts).
 * Env: BENCH_RUNS (default 25).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CLI_TARGET } from "../src/version.ts";
import { IDLE_TRIM_AFTER_MS } from "../src/daemon/settings.ts";
import { groupMembers, machineLine, runBench, stats, VERSION, type BenchHome, type Run, type Stats } from "./harness.ts";

const RUNS = Number(process.env.BENCH_RUNS) || 25;
const IDLE_BEFORE_RSS_MS = 1_000;
const RSS_SAMPLES = 5;
const RSS_SAMPLE_INTERVAL_MS = 200;
const UPDATER_IDLE_DELAY_MS = 3_600_000;
/**
 * An idle app-server is one past its quiet period: it unmaps its executable's idle pages then
 * (src/server/idle-trim.ts). The RSS rows wait this long after the last client event.
 */
const IDLE_TRIM_WAIT_MS = IDLE_TRIM_AFTER_MS + 1_000;
/** `version` right after a trim costs a quiet period each: a few samples (report only). */
const AFTER_TRIM_RUNS = 3;

/**
 * Targets from issue 11, all relative to the floor measured in the same run
 * (absolute numbers differ 5× between machines): `ratio` = median ≤ value ×
 * floor; `overFloorMb` = median ≤ floor RSS + value.
 */
type Target = { ratio: number } | { overFloorMb: number };
type Row = { name: string; unit: "ms" | "MB"; target?: Target; stats?: Stats; error?: string; floor?: boolean };

/** `berth --version`: plain text, no JSON. */
async function versionFlag(bench: BenchHome): Promise<Run> {
  const run = await bench.timed([bench.binary, "--version"]);
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

/**
 * Rss counts every page the process maps, shared or not; Pss divides each
 * shared page among the processes mapping it. Most of a Bun process's RSS is
 * the executable's own pages, which the app-server and the updater (the same
 * file) share: the sum of their Pss is what berth really keeps resident.
 */
function memoryMb(pid: number, field: "Rss" | "Pss"): number {
  const match = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8").match(new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m"));
  if (!match) throw new Error(`no ${field} for pid ${pid}`);
  return Number(match[1]) / 1024;
}

/** A process, or (`group`) its whole process group: the keeper is the sh loop plus its `sleep` of the moment. */
function membersMemoryMb(pid: number, field: "Rss" | "Pss", group: boolean): number {
  if (!group) return memoryMb(pid, field);
  let total = 0;
  for (const member of groupMembers(pid)) {
    try {
      total += memoryMb(member, field);
    } catch {
      // a member that exited between the listing and the read holds nothing
    }
  }
  return total;
}

async function idleMemory(pid: number, field: "Rss" | "Pss" = "Rss", group = false): Promise<Stats> {
  await Bun.sleep(IDLE_BEFORE_RSS_MS);
  const samples: number[] = [];
  for (let i = 0; i < RSS_SAMPLES; i += 1) {
    samples.push(membersMemoryMb(pid, field, group));
    await Bun.sleep(RSS_SAMPLE_INTERVAL_MS);
  }
  return stats(samples);
}

function renderTable(rows: Row[]): string {
  const floorOf = (unit: "ms" | "MB") => rows.find((r) => r.floor && r.unit === unit)?.stats?.median;
  const lines = [
    "| measure | median | × floor | p90 | min | target | meets target |",
    "| --- | ---: | ---: | ---: | ---: | ---: | :---: |",
  ];
  for (const row of rows) {
    const { unit } = row;
    const floor = floorOf(unit);
    const target = !row.target ? "—" : "ratio" in row.target ? `≤ ${row.target.ratio}×` : `≤ floor + ${row.target.overFloorMb} MB`;
    if (!row.stats) {
      lines.push(`| ${row.name} | failed: ${row.error ?? "?"} | | | | ${target} | ✗ |`);
      continue;
    }
    const { median, p90, min } = row.stats;
    const ratio = floor ? median / floor : undefined;
    let verdict = "—";
    if (row.target && floor !== undefined && ratio !== undefined) {
      const meets = "ratio" in row.target ? ratio <= row.target.ratio : median <= floor + row.target.overFloorMb;
      verdict = meets ? "yes" : "**no**";
    }
    const times = ratio === undefined ? "—" : `${ratio.toFixed(2)}×`;
    lines.push(`| ${row.name} | ${median.toFixed(1)} ${unit} | ${times} | ${p90.toFixed(1)} ${unit} | ${min.toFixed(1)} ${unit} | ${target} | ${verdict} |`);
  }
  return lines.join("\n");
}

async function row(rows: Row[], spec: Omit<Row, "stats" | "error" | "unit"> & { unit?: Row["unit"] }, measure: () => Promise<Stats>): Promise<void> {
  const unit = spec.unit ?? "ms";
  process.stderr.write(`bench: ${spec.name}…\n`);
  try {
    rows.push({ ...spec, unit, stats: await measure() });
  } catch (error) {
    rows.push({ ...spec, unit, error: (error instanceof Error ? error.message : String(error)).replace(/\s+/g, " ").slice(0, 200) });
  }
}

async function main(bench: BenchHome): Promise<void> {
  const { env, timed, berth } = bench;
  // Bun's own floor: a compiled program that does nothing (or, given `idle`, just stays up).
  const floorBinary = join(bench.base, "empty");
  const emptyEntry = join(bench.base, "empty.ts");
  writeFileSync(emptyEntry, 'if (process.argv[2] === "idle") setInterval(() => {}, 1 << 30);\n');
  const floor = await Bun.build({ entrypoints: [emptyEntry], compile: { outfile: floorBinary, autoloadBunfig: false, autoloadDotenv: false } });

  const rows: Row[] = [];
  const start = () => berth(["start"], ["started", "alreadyRunning"]);
  const stop = () => berth(["stop"], ["stopped", "notRunning"]);

  // The floor is sampled before and after the berth rows (half each), so load that changes during the run
  // weighs on both sides of the ratio.
  const floorSamples: number[] = [];
  const floorHalf = async () => {
    if (!floor.success) throw new Error("the empty program did not compile");
    for (let i = 0; i < Math.ceil(RUNS / 2); i += 1) floorSamples.push((await timed([floorBinary])).ms);
  };
  await floorHalf();
  await row(rows, { name: "`--version` (CLI cold start)", target: { ratio: 1.3 } }, () => sample(RUNS, async () => {}, () => versionFlag(bench)));
  // After `down` nothing runs, so `start` also launches the keeper (spec "Supervision"); after `stop` the keeper stays.
  const down = () => berth(["down"], ["down"]);
  await row(rows, { name: "`start` (nothing → ready, keeper launched too)", target: { ratio: 3 } }, () =>
    sample(RUNS, down, () => berth(["start"], ["started"])),
  );
  await row(rows, { name: "`start` after `stop` (keeper already running)", target: { ratio: 3 } }, () =>
    sample(RUNS, stop, () => berth(["start"], ["started"])),
  );
  await row(rows, { name: "`version` (server running)", target: { ratio: 1.5 } }, async () => {
    await start();
    return sample(RUNS, async () => {}, () => berth(["version"], ["running"]));
  });
  await row(rows, { name: "`status` (server running)", target: { ratio: 1.5 } }, async () => {
    await start();
    return sample(RUNS, async () => {}, () => berth(["status"], []));
  });
  await row(rows, { name: "`stop`", target: { ratio: 2 } }, () =>
    sample(RUNS, start, () => berth(["stop"], ["stopped"])),
  );
  await row(rows, { name: "`restart` (server running)", target: { ratio: 4 } }, async () => {
    await start();
    return sample(RUNS, async () => {}, () => berth(["restart"], ["restarted"]));
  });
  await row(rows, { name: "Bun floor: compiled empty program", floor: true }, async () => {
    await floorHalf();
    return stats(floorSamples);
  });
  await row(rows, { name: "Bun floor: idle compiled program RSS", unit: "MB", floor: true }, async () => {
    if (!floor.success) throw new Error("the empty program did not compile");
    // Carries BERTH_HOME in its environment, so cleanup() finds it even if this throws.
    const idle = Bun.spawn({ cmd: [floorBinary, "idle"], env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    try {
      return await idleMemory(idle.pid);
    } finally {
      idle.kill("SIGKILL");
      await idle.exited;
    }
  });
  await row(rows, { name: "app-server RSS 1 s after a request, before its quiet period (report only)", unit: "MB" }, async () => {
    await start();
    const { json } = await berth(["version"], ["running"]);
    return idleMemory(json.pid as number);
  });
  await row(rows, { name: `app-server idle RSS (after its ${IDLE_TRIM_AFTER_MS / 1000} s quiet period)`, unit: "MB", target: { overFloorMb: 6 } }, async () => {
    const { json } = await berth(["version"], ["running"]);
    await Bun.sleep(IDLE_TRIM_WAIT_MS);
    return idleMemory(json.pid as number);
  });
  await row(rows, { name: "`version`, the first request after a quiet period (report only)" }, () =>
    sample(AFTER_TRIM_RUNS, () => Bun.sleep(IDLE_TRIM_WAIT_MS), () => berth(["version"], ["running"])),
  );
  // Both daemons at once, as `bootstrap` leaves them.
  const both: { appServer?: number; updater?: number; quietAt?: number } = {};
  const sum = (a: Stats, b: Stats): Stats => ({ median: a.median + b.median, p90: a.p90 + b.p90, min: a.min + b.min });
  await row(rows, { name: "updater (`update-loop`, its whole group) idle RSS", unit: "MB" }, async () => {
    const { json } = await berth(["bootstrap"], ["bootstrapped"], { BERTH_UPDATE_INITIAL_DELAY_MS: String(UPDATER_IDLE_DELAY_MS) });
    const record = JSON.parse(readFileSync(join(bench.home, "daemon", "updater.pid"), "utf8")) as { pid: number };
    both.appServer = json.pid as number;
    both.updater = record.pid;
    both.quietAt = Date.now() + IDLE_TRIM_WAIT_MS;
    return idleMemory(record.pid, "Rss", true);
  });
  await row(rows, { name: "everything resident, Σ RSS (app-server + updater)", unit: "MB", target: { ratio: 1.6 } }, async () => {
    if (!both.appServer || !both.updater) throw new Error("bootstrap failed");
    // The app-server as it idles: past its quiet period after bootstrap's requests.
    await Bun.sleep(Math.max(0, (both.quietAt ?? 0) - Date.now()));
    return sum(await idleMemory(both.appServer), await idleMemory(both.updater, "Rss", true));
  });
  await row(rows, { name: "everything resident, Σ PSS (shared pages once)", unit: "MB", target: { ratio: 1.6 } }, async () => {
    if (!both.appServer || !both.updater) throw new Error("bootstrap failed");
    return sum(await idleMemory(both.appServer, "Pss"), await idleMemory(both.updater, "Pss", true));
  });

  console.log(`\nberth ${VERSION} (${CLI_TARGET}), Bun ${Bun.version}, ${machineLine()}, ${new Date().toISOString().slice(0, 10)}, ${RUNS} runs per timing row\n`);
  console.log(renderTable(rows));
}

await runBench("bench", "berth-bench-", main);
