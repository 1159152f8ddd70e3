#!/usr/bin/env bun
/**
 * berth against pm2, side by side in one run: `pm2 start app.js --wait-ready`
 * + `pm2 delete` (warm daemon) against `berth start` + `berth stop`,
 * alternating A B A B so load on the machine weighs on both. pm2 is installed
 * by this script into a temporary folder (`npm install --prefix`), never as a
 * dependency of berth; its daemon runs with PM2_HOME in that folder and is
 * killed at the end. Prints a markdown table; always exits 0.
 * Run: `bun run bench/compare.ts`. Env: BENCH_RUNS (default 25), PM2_VERSION (default 7).
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { killAll, machineLine, processesWithEnv, runBench, stats, timedIn, type BenchHome, type Run, type Stats } from "./harness.ts";

const RUNS = Number(process.env.BENCH_RUNS) || 25;
const PM2_VERSION = process.env.PM2_VERSION || "7";
const APP_NAME = "berth-bench-app";

/** A pm2 app that tells pm2 it is ready (what --wait-ready waits for), then idles like the app-server. */
const APP_JS = `if (process.send) process.send("ready");\nsetInterval(() => {}, 1 << 30);\n`;

type Pm2 = { env: Record<string, string>; bin: string; app: string; home: string };

async function installPm2(base: string): Promise<Pm2> {
  const prefix = join(base, "pm2");
  const home = join(base, "pm2-home");
  mkdirSync(home, { recursive: true });
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: base, PM2_HOME: home, NO_COLOR: "1" };
  process.stderr.write(`compare: npm install --prefix ${prefix} pm2@${PM2_VERSION}…\n`);
  // npm keeps this user's own configuration (registry, certificates): only the prefix is ours.
  const npmEnv = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
  const install = await timedIn(npmEnv, ["npm", "install", "--prefix", prefix, `pm2@${PM2_VERSION}`, "--no-audit", "--no-fund", "--loglevel=error"]);
  if (install.code !== 0) throw new Error(`npm install pm2 failed: ${install.stderr.trim().slice(0, 400)}`);
  const app = join(base, "app.js");
  writeFileSync(app, APP_JS);
  return { env, bin: join(prefix, "node_modules", ".bin", "pm2"), app, home };
}

async function pm2(p: Pm2, args: string[]): Promise<Run> {
  const run = await timedIn(p.env, [p.bin, ...args]);
  if (run.code !== 0) throw new Error(`pm2 ${args.join(" ")} exited ${run.code}: ${run.stderr.trim().slice(0, 400)}`);
  return run;
}

type Cycle = { start: number; stop: number };

async function pm2Cycle(p: Pm2): Promise<Cycle> {
  const start = await pm2(p, ["start", p.app, "--name", APP_NAME, "--wait-ready"]);
  const stop = await pm2(p, ["delete", APP_NAME]);
  return { start: start.ms, stop: stop.ms };
}

async function berthCycle(bench: BenchHome): Promise<Cycle> {
  const start = await bench.berth(["start"], ["started"]);
  const stop = await bench.berth(["stop"], ["stopped"]);
  return { start: start.ms, stop: stop.ms };
}

function table(berth: Cycle[], pm2s: Cycle[]): string {
  const column = (cycles: Cycle[], pick: (c: Cycle) => number): Stats => stats(cycles.map(pick));
  const rows: [string, (c: Cycle) => number][] = [
    ["start (→ ready)", (c) => c.start],
    ["stop / delete", (c) => c.stop],
    ["whole cycle", (c) => c.start + c.stop],
  ];
  const lines = [
    "| measure | berth median | pm2 median | pm2 ÷ berth | berth p90 | pm2 p90 |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const [name, pick] of rows) {
    const b = column(berth, pick);
    const p = column(pm2s, pick);
    lines.push(`| ${name} | ${b.median.toFixed(1)} ms | ${p.median.toFixed(1)} ms | **${(p.median / b.median).toFixed(1)}×** | ${b.p90.toFixed(1)} ms | ${p.p90.toFixed(1)} ms |`);
  }
  return lines.join("\n");
}

async function main(bench: BenchHome): Promise<void> {
  const p = await installPm2(bench.base);
  const pm2Version = (await pm2(p, ["--version"])).stdout.trim().split("\n").pop();
  const nodeVersion = (await timedIn(p.env, ["node", "--version"])).stdout.trim();
  // Warm: pm2's daemon up (its first command spawns it), one untimed cycle of each.
  await pm2(p, ["ping"]);
  await pm2Cycle(p);
  await berthCycle(bench);
  const berth: Cycle[] = [];
  const pm2s: Cycle[] = [];
  for (let i = 0; i < RUNS; i += 1) {
    berth.push(await berthCycle(bench));
    pm2s.push(await pm2Cycle(p));
    if ((i + 1) % 5 === 0) process.stderr.write(`compare: ${i + 1}/${RUNS}\n`);
  }
  console.log(`\nberth (compiled) vs pm2 ${pm2Version} (node ${nodeVersion}), Bun ${Bun.version}, ${machineLine()}, ${new Date().toISOString().slice(0, 10)}, ${RUNS} alternating cycles\n`);
  console.log(table(berth, pm2s));
}

async function stopPm2(bench: BenchHome): Promise<void> {
  const home = join(bench.base, "pm2-home");
  try {
    await timedIn({ PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: bench.base, PM2_HOME: home }, [join(bench.base, "pm2", "node_modules", ".bin", "pm2"), "kill"]);
  } catch {
    // not installed, or already gone
  }
  killAll(processesWithEnv(`PM2_HOME=${home}`));
  rmSync(home, { recursive: true, force: true });
}

await runBench("compare", "berth-compare-", main, async (bench) => {
  await stopPm2(bench);
  await bench.cleanup();
});
