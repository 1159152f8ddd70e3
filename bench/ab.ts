#!/usr/bin/env bun
/**
 * A/B of two berth binaries on the lifecycle commands, alternating A B A B in one run, each in its own
 * temporary BERTH_HOME, next to the floor (an empty compiled program) sampled in the same rounds.
 * Whole commands, spawn → exit, as lifecycle.ts times them: a change is a speed-up only if it shows here
 * (marks inside a process, or a micro-benchmark of one import, have misled before; see README).
 *
 *   bun run bench/ab.ts OLD_BINARY NEW_BINARY      # e.g. dist/berth built at two commits
 * Env: BENCH_RUNS (rounds, default 25). Always exits 0.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeBenchHome, machineLine, stats, type BenchHome } from "./harness.ts";

const RUNS = Number(process.env.BENCH_RUNS) || 25;
/** Each round, in this order, for A then B: every command leaves the state the next one needs. */
const COMMANDS = [["start"], ["version"], ["status"], ["restart"], ["stop"]] as const;

const [oldBinary, newBinary] = process.argv.slice(2);
if (!oldBinary || !newBinary) {
  console.error("usage: bun run bench/ab.ts OLD_BINARY NEW_BINARY");
  process.exit(0);
}
const homes: BenchHome[] = [];
try {
  for (const [i, binary] of [oldBinary, newBinary].entries()) homes.push(await makeBenchHome(`berth-ab-${i}-`, binary));
  const floorBinary = join(homes[0]!.base, "empty");
  writeFileSync(`${floorBinary}.ts`, "export {};\n");
  const floor = await Bun.build({ entrypoints: [`${floorBinary}.ts`], compile: { outfile: floorBinary, autoloadBunfig: false, autoloadDotenv: false } });
  if (!floor.success) throw new Error("the empty program did not compile");
  const names = ["floor", ...COMMANDS.map((c) => c.join(" "))];
  const samples = names.map(() => [[], []] as number[][]);
  for (let round = 0; round < RUNS; round += 1) {
    for (const [side, home] of homes.entries()) {
      samples[0]![side]!.push((await home.timed([floorBinary])).ms);
      for (const [i, command] of COMMANDS.entries()) {
        const run = await home.timed([home.binary, ...command]);
        if (run.code !== 0) throw new Error(`${side === 0 ? "A" : "B"}: berth ${command.join(" ")} exited ${run.code}: ${run.stdout.trim()}`);
        samples[i + 1]![side]!.push(run.ms);
      }
    }
    process.stderr.write(`ab: round ${round + 1}/${RUNS}\r`);
  }
  const floorA = stats(samples[0]![0]!).median;
  const floorB = stats(samples[0]![1]!).median;
  console.log(`\nA = ${oldBinary}, B = ${newBinary}; ${machineLine()}, ${RUNS} alternating rounds\n`);
  console.log("| measure | A median | A × floor | B median | B × floor | B ÷ A |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
  for (const [i, name] of names.entries()) {
    const a = stats(samples[i]![0]!).median;
    const b = stats(samples[i]![1]!).median;
    console.log(`| ${name} | ${a.toFixed(1)} ms | ${(a / floorA).toFixed(2)}× | ${b.toFixed(1)} ms | ${(b / floorB).toFixed(2)}× | ${(b / a).toFixed(2)} |`);
  }
} catch (error) {
  console.error(`ab: failed: ${error instanceof Error ? error.message : String(error)}`);
} finally {
  for (const home of homes) await home.cleanup();
}
process.exit(0);
