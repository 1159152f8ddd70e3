#!/usr/bin/env bun
/**
 * A/B of two berth binaries on the lifecycle commands, alternating A B A B in one run, each in its own
 * temporary BERTH_HOME, next to the floor (an empty compiled program) sampled in the same rounds.
 * Whole commands, spawn → exit, as lifecycle.ts times them: a change is a speed-up only if it shows here
 * (marks inside a process, or a micro-benchmark of one import, have misled before; see README).
 *
 *   bun run bench/ab.ts OLD_BINARY NEW_BINARY [MORE…]   # e.g. dist/berth built at two commits
 * With more than two binaries the rounds go A B C …, and every column is compared with A.
 * Env: BENCH_RUNS (rounds, default 25). Always exits 0.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeBenchHome, machineLine, stats, type BenchHome } from "./harness.ts";

const RUNS = Number(process.env.BENCH_RUNS) || 25;
/** Each round, in this order, for A then B: every command leaves the state the next one needs. */
const COMMANDS = [["start"], ["version"], ["status"], ["restart"], ["stop"]] as const;

const binaries = process.argv.slice(2);
if (binaries.length < 2) {
  console.error("usage: bun run bench/ab.ts OLD_BINARY NEW_BINARY [MORE…]");
  process.exit(0);
}
const label = (side: number) => String.fromCharCode(65 + side);
const homes: BenchHome[] = [];
try {
  for (const [i, binary] of binaries.entries()) homes.push(await makeBenchHome(`berth-ab-${i}-`, binary));
  const floorBinary = join(homes[0]!.base, "empty");
  writeFileSync(`${floorBinary}.ts`, "export {};\n");
  const floor = await Bun.build({ entrypoints: [`${floorBinary}.ts`], compile: { outfile: floorBinary, autoloadBunfig: false, autoloadDotenv: false } });
  if (!floor.success) throw new Error("the empty program did not compile");
  const names = ["floor", ...COMMANDS.map((c) => c.join(" "))];
  const samples = names.map(() => binaries.map(() => [] as number[]));
  for (let round = 0; round < RUNS; round += 1) {
    for (const [side, home] of homes.entries()) {
      samples[0]![side]!.push((await home.timed([floorBinary])).ms);
      for (const [i, command] of COMMANDS.entries()) {
        const run = await home.timed([home.binary, ...command]);
        if (run.code !== 0) throw new Error(`${label(side)}: berth ${command.join(" ")} exited ${run.code}: ${run.stdout.trim()}`);
        samples[i + 1]![side]!.push(run.ms);
      }
    }
    process.stderr.write(`ab: round ${round + 1}/${RUNS}\r`);
  }
  const floors = binaries.map((_, side) => stats(samples[0]![side]!).median);
  console.log(`\n${binaries.map((binary, side) => `${label(side)} = ${binary}`).join(", ")}; ${machineLine()}, ${RUNS} alternating rounds\n`);
  const others = binaries.slice(1).map((_, i) => label(i + 1));
  console.log(`| measure | A median | A × floor | ${others.map((x) => `${x} median | ${x} × floor | ${x} ÷ A`).join(" | ")} |`);
  console.log(`| --- | ---: | ---: | ${others.map(() => "---: | ---: | ---:").join(" | ")} |`);
  for (const [i, name] of names.entries()) {
    const medians = binaries.map((_, side) => stats(samples[i]![side]!).median);
    const a = medians[0]!;
    const cells = medians.slice(1).map((m, j) => `${m.toFixed(1)} ms | ${(m / floors[j + 1]!).toFixed(2)}× | ${(m / a).toFixed(2)}`);
    console.log(`| ${name} | ${a.toFixed(1)} ms | ${(a / floors[0]!).toFixed(2)}× | ${cells.join(" | ")} |`);
  }
} catch (error) {
  console.error(`ab: failed: ${error instanceof Error ? error.message : String(error)}`);
} finally {
  for (const home of homes) await home.cleanup();
}
process.exit(0);
