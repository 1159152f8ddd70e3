#!/usr/bin/env bun
/**
 * The keeper's resident cost (issue 11 item 3), on the compiled binary:
 * idle RSS and PSS of the keeper's whole process group (the loop and whatever
 * it has running at the moment of the sample, e.g. its `sleep`), of the
 * app-server, of an idle compiled empty Bun program (the floor), and the
 * keeper group's CPU over a window (utime+stime of its members, plus the
 * children it reaped), all from one run; then how long after a SIGKILL of the
 * app-server a new one answers (spec: 2 s). Prints a markdown table.
 * Run: `bun run bench/keeper.ts`. Env: BENCH_CPU_WINDOW_MS (default 30000).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { probeInitialize } from "../src/server/client.ts";
import { CLI_TARGET } from "../src/version.ts";
import { groupMembers, machineLine, runBench, stats, VERSION, type BenchHome, type Stats } from "./harness.ts";

const IDLE_BEFORE_SAMPLES_MS = 2_000;
const SAMPLES = 10;
const SAMPLE_INTERVAL_MS = 300;
const CPU_WINDOW_MS = Number(process.env.BENCH_CPU_WINDOW_MS) || 30_000;
const UPDATER_IDLE_DELAY_MS = 3_600_000;
const CLOCK_TICKS_PER_S = 100;
const ANSWER_AGAIN_DEADLINE_MS = 20_000;
const ANSWER_POLL_MS = 5;
const PROBE_TIMEOUT_MS = 500;

/** Fields of /proc/<pid>/stat after the command name (index 0 = field 3, state). */
function statFields(pid: number): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    return text.slice(text.lastIndexOf(")") + 2).trim().split(" ");
  } catch {
    return undefined;
  }
}

function memoryMb(pid: number, field: "Rss" | "Pss"): number {
  try {
    const match = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8").match(new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m"));
    return match ? Number(match[1]) / 1024 : 0;
  } catch {
    return 0; // exited between the listing and the read
  }
}

async function idle(pids: () => number[], field: "Rss" | "Pss"): Promise<Stats> {
  const samples: number[] = [];
  for (let i = 0; i < SAMPLES; i += 1) {
    samples.push(pids().reduce((sum, pid) => sum + memoryMb(pid, field), 0));
    await Bun.sleep(SAMPLE_INTERVAL_MS);
  }
  return stats(samples);
}

/** CPU ticks used by the group so far: members' utime+stime, and what the leader reaped (cutime+cstime). */
function groupTicks(pgid: number): number {
  let ticks = 0;
  for (const pid of groupMembers(pgid)) {
    const f = statFields(pid) ?? [];
    ticks += Number(f[11]) + Number(f[12]);
    if (pid === pgid) ticks += Number(f[13]) + Number(f[14]);
  }
  return ticks;
}

/** SIGKILL of the app-server until a new one answers `initialize` on the socket. */
async function answersAgainMs(bench: BenchHome, server: number): Promise<number> {
  const socket = join(bench.home, "daemon", "app-server.sock");
  const killedAt = performance.now();
  process.kill(server, "SIGKILL");
  const deadline = killedAt + ANSWER_AGAIN_DEADLINE_MS;
  while (performance.now() < deadline) {
    const probe = await probeInitialize(socket, PROBE_TIMEOUT_MS);
    if (probe.kind === "berth" && probe.info.pid !== server) return performance.now() - killedAt;
    await Bun.sleep(ANSWER_POLL_MS);
  }
  throw new Error(`no app-server answered within ${ANSWER_AGAIN_DEADLINE_MS} ms of the crash`);
}

async function main(bench: BenchHome): Promise<void> {
  const floorBinary = join(bench.base, "empty");
  const emptyEntry = join(bench.base, "empty.ts");
  writeFileSync(emptyEntry, 'if (process.argv[2] === "idle") setInterval(() => {}, 1 << 30);\n');
  const floor = await Bun.build({ entrypoints: [emptyEntry], compile: { outfile: floorBinary, autoloadBunfig: false, autoloadDotenv: false } });
  if (!floor.success) throw new Error("the empty program did not compile");
  const idleFloor = Bun.spawn({ cmd: [floorBinary, "idle"], env: bench.env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  const { json } = await bench.berth(["bootstrap"], ["bootstrapped"], { BERTH_UPDATE_INITIAL_DELAY_MS: String(UPDATER_IDLE_DELAY_MS) });
  const server = json.pid as number;
  const keeper = (JSON.parse(readFileSync(join(bench.home, "daemon", "updater.pid"), "utf8")) as { pid: number }).pid;
  await Bun.sleep(IDLE_BEFORE_SAMPLES_MS);
  const exe = readFileSync(`/proc/${keeper}/cmdline`, "utf8").split("\0")[0];
  const rows: Array<[string, Stats]> = [];
  try {
    const floorRss = await idle(() => [idleFloor.pid], "Rss");
    const floorPss = await idle(() => [idleFloor.pid], "Pss");
    rows.push(["Bun floor: idle compiled program RSS", floorRss], ["Bun floor: idle compiled program PSS", floorPss]);
    rows.push(["app-server idle RSS", await idle(() => [server], "Rss")], ["app-server idle PSS", await idle(() => [server], "Pss")]);
    rows.push(["keeper idle RSS (its whole group)", await idle(() => groupMembers(keeper), "Rss")]);
    rows.push(["keeper idle PSS (its whole group)", await idle(() => groupMembers(keeper), "Pss")]);
    rows.push(["everything resident, Σ RSS", await idle(() => [server, ...groupMembers(keeper)], "Rss")]);
    rows.push(["everything resident, Σ PSS", await idle(() => [server, ...groupMembers(keeper)], "Pss")]);
    const before = groupTicks(keeper);
    const started = performance.now();
    await Bun.sleep(CPU_WINDOW_MS);
    const cpu = ((groupTicks(keeper) - before) / CLOCK_TICKS_PER_S / ((performance.now() - started) / 1000)) * 100;
    console.log(`\nberth ${VERSION} (${CLI_TARGET}), Bun ${Bun.version}, ${machineLine()}, ${new Date().toISOString()}; keeper pid ${keeper} runs ${exe}\n`);
    console.log("| measure | median | × floor RSS | × floor PSS | min | max-ish (p90) |");
    console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (const [name, s] of rows) {
      console.log(`| ${name} | ${s.median.toFixed(2)} MB | ${(s.median / floorRss.median).toFixed(2)}× | ${(s.median / floorPss.median).toFixed(2)}× | ${s.min.toFixed(2)} MB | ${s.p90.toFixed(2)} MB |`);
    }
    console.log(`| keeper idle CPU over ${CPU_WINDOW_MS / 1000} s | ${cpu.toFixed(2)} % of a core | | | | |`);
    console.log(`| first crash (SIGKILL) → app-server answers again | ${(await answersAgainMs(bench, server)).toFixed(0)} ms | | | | spec: ≤ 2 s |`);
  } finally {
    idleFloor.kill("SIGKILL");
    await idleFloor.exited;
  }
}

await runBench("bench", "berth-bench-keeper-", main);
