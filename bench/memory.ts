#!/usr/bin/env bun
/**
 * Idle memory of the compiled app-server next to the Bun floor (a compiled
 * empty program kept alive by a timer), split the way /proc splits it:
 * RssAnon (heap, JIT: what the process owns) and RssFile (pages of the
 * executable it touched, shared with every process running the same file),
 * and PSS. Each binary is evicted from the page cache before it starts, so
 * the kernel's fault-around maps only what was read: numbers are stable to
 * ~0.1 MB between runs (with the file hot in the cache, as lifecycle.ts
 * measures right after compiling, RSS is ~5 MB higher and noisier).
 *
 * `BENCH_BASE=<checkout>` also builds that checkout (its own build.ts) and
 * alternates it with this one, A B A B, for a same-run before/after.
 * Rows: 1 s after one `initialize` (before its quiet period); idle, i.e. past
 * its quiet period (IDLE_TRIM_AFTER_MS + 1 s: it has unmapped its
 * executable's idle pages, src/server/idle-trim.ts); then a second table
 * with the binary's pages in the page cache (fincore) before and after that
 * trim and the latency of the first `initialize` after it against a warm
 * one (report only). On Linux x64 also after the kernel
 * was asked to page out the executable's pages (process_madvise MADV_PAGEOUT,
 * needs root or CAP_SYS_NICE; the floor too), and again after one more
 * request: the code a request really needs resident, as opposed to what
 * start-up touched once.
 * Run: `bun run bench/memory.ts`. Env: BENCH_ROUNDS (default 4), BENCH_BASE, BENCH_CACHE=hot.
 * Always exits 0.
 */
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { machineLine } from "./harness.ts";
import { IDLE_TRIM_AFTER_MS } from "../src/daemon/settings.ts";

const ROUNDS = Number(process.env.BENCH_ROUNDS) || 4;
const COLD = process.env.BENCH_CACHE !== "hot";
const IDLE_MS = 1_000;
const SAMPLES = 5;
const SAMPLE_INTERVAL_MS = 200;
const READY_TIMEOUT_MS = 15_000;
const CALL_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const MADV_PAGEOUT = 21;
const SYS_PIDFD_OPEN = 434;
const SYS_PROCESS_MADVISE = 440;
/** The app-server's own quiet period (default settings) and a second for the trim to land. */
const IDLE_TRIM_WAIT_MS = IDLE_TRIM_AFTER_MS + 1_000;

type Memory = { rss: number; anon: number; file: number; pss: number };
type Variant = { name: string; binary: string; server: boolean; id: number };
type Row = { variant: string; state: string; samples: Memory[] };
/** Per server variant: the binary's page-cache pages before/after the trim, and `initialize` latency after it and warm. */
type TrimRow = { variant: string; cachedBefore: number[]; cachedAfter: number[]; firstMs: number[]; warmMs: number[] };

const base = mkdtempSync(join(tmpdir(), "berth-bench-memory-"));
/** Every process this bench started, until it has exited (only those are ever signalled). */
const children = new Set<Bun.Subprocess>();

function memory(pid: number): Memory {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (text: string, key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, "m").exec(text)?.[1] ?? NaN) / 1024;
  return { rss: kb(status, "VmRSS"), anon: kb(status, "RssAnon"), file: kb(status, "RssFile"), pss: kb(rollup, "Pss") };
}

async function idleMemory(pid: number): Promise<Memory> {
  await Bun.sleep(IDLE_MS);
  const samples: Memory[] = [];
  for (let i = 0; i < SAMPLES; i += 1) {
    samples.push(memory(pid));
    await Bun.sleep(SAMPLE_INTERVAL_MS);
  }
  return median(samples);
}

function median(samples: Memory[]): Memory {
  const at = (key: keyof Memory) => [...samples.map((s) => s[key])].sort((a, b) => a - b)[Math.floor(samples.length / 2)] as number;
  return { rss: at("rss"), anon: at("anon"), file: at("file"), pss: at("pss") };
}

/** Drops the binary's pages from the page cache (after writing them back), so its start reads it like a first start after boot. */
function evict(path: string): void {
  if (!COLD) return;
  Bun.spawnSync(["sync", path]);
  Bun.spawnSync(["dd", `if=${path}`, "iflag=nocache", "count=0", "status=none"]);
}

/** Pages of `path` in the page cache (util-linux fincore); NaN where it is missing. */
function cachedPages(path: string): number {
  try {
    const run = Bun.spawnSync(["fincore", "--noheadings", "--output", "PAGES", path]);
    return run.exitCode === 0 ? Number(run.stdout.toString().trim()) : NaN;
  } catch {
    return NaN; // no fincore here (not util-linux)
  }
}

/** One `initialize` over the control socket (connect to answer, ms); throws unless a berth app-server answered. */
async function initialize(socket: string): Promise<number> {
  const startedAt = performance.now();
  const reply = await new Promise<string>((resolvePromise, reject) => {
    const ws = new WebSocket(`ws+unix://${socket}`);
    const timer = setTimeout(() => reject(new Error(`no answer on ${socket} within ${CALL_TIMEOUT_MS} ms`)), CALL_TIMEOUT_MS);
    ws.onopen = () => ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { clientInfo: { name: "bench-memory", version: "0" } } }));
    ws.onmessage = (event) => {
      clearTimeout(timer);
      ws.close();
      resolvePromise(String(event.data));
    };
    ws.onerror = () => reject(new Error(`cannot connect to ${socket}`));
  });
  if (!reply.includes('"userAgent"')) throw new Error(`unexpected initialize reply: ${reply.slice(0, 200)}`);
  return performance.now() - startedAt;
}

async function waitForSocket(socket: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!existsSync(socket)) {
    if (Date.now() > deadline) throw new Error(`${socket} did not appear within ${READY_TIMEOUT_MS} ms`);
    await Bun.sleep(10);
  }
}

/** Asks the kernel to page out every page of `binary` mapped by `pid`; false where that is not possible. */
function pageOut(pid: number, binary: string): boolean {
  if (process.platform !== "linux" || process.arch !== "x64") return false;
  try {
    const { dlopen, FFIType, ptr } = require("bun:ffi") as typeof import("bun:ffi");
    const libc = dlopen("libc.so.6", { syscall: { args: [FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64], returns: FFIType.i64 } });
    const syscall = libc.symbols.syscall as (...args: Array<number | bigint>) => number | bigint;
    const pidfd = Number(syscall(SYS_PIDFD_OPEN, pid, 0, 0, 0, 0));
    if (pidfd < 0) return false;
    let ok = true;
    for (const line of readFileSync(`/proc/${pid}/maps`, "utf8").split("\n")) {
      const [range, , , , , path] = line.trim().split(/\s+/);
      if (!range || path !== binary) continue;
      const [from, to] = range.split("-").map((hex) => BigInt(`0x${hex}`)) as [bigint, bigint];
      const iovec = new BigUint64Array([from, to - from]);
      if (Number(syscall(SYS_PROCESS_MADVISE, pidfd, ptr(iovec), 1, MADV_PAGEOUT, 0, 0)) < 0) ok = false;
    }
    closeSync(pidfd);
    libc.close();
    return ok;
  } catch {
    return false;
  }
}

type SpawnSpec = { cmd: string[]; cwd?: string; env?: Record<string, string>; stdin: "ignore"; stdout: "ignore" | number; stderr: "ignore" | number };

function spawn(options: SpawnSpec): Bun.Subprocess {
  const child = Bun.spawn(options);
  children.add(child);
  void child.exited.then(() => children.delete(child));
  return child;
}

async function stop(child: Bun.Subprocess): Promise<void> {
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
  await child.exited;
  clearTimeout(timer);
}

async function measure(variant: Variant, round: number, rows: Row[], trims: TrimRow[]): Promise<void> {
  const record = (state: string, value: Memory) => {
    let row = rows.find((r) => r.variant === variant.name && r.state === state);
    if (!row) rows.push((row = { variant: variant.name, state, samples: [] }));
    row.samples.push(value);
  };
  evict(variant.binary);
  if (!variant.server) {
    const child = spawn({ cmd: [variant.binary, "idle"], stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    try {
      record("idle", await idleMemory(child.pid));
      if (pageOut(child.pid, variant.binary)) record("executable paged out (kernel asked)", await idleMemory(child.pid));
    } finally {
      await stop(child);
    }
    return;
  }
  const home = join(base, `home-${variant.id}-${round}`);
  const daemonDir = join(home, "daemon");
  mkdirSync(daemonDir, { recursive: true, mode: 0o700 });
  writeFileSync(join(daemonDir, "settings.json"), JSON.stringify({ releaseBaseUrl: "" }), { mode: 0o600 });
  const socket = join(daemonDir, "app-server.sock");
  // As the launcher does: stdout and stderr are the log (so the server stamps and rotates its own lines).
  const log = openSync(join(daemonDir, "app-server.log"), "a", 0o600);
  const child = spawn({
    cmd: [variant.binary, "serve", "--listen", `unix://${socket}`],
    cwd: home,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: base, BERTH_HOME: home, NO_COLOR: "1" },
    stdin: "ignore",
    stdout: log,
    stderr: log,
  });
  closeSync(log);
  try {
    await waitForSocket(socket);
    await initialize(socket);
    const requestedAt = Date.now();
    record("1 s after one initialize (before its quiet period)", await idleMemory(child.pid));
    let trim = trims.find((t) => t.variant === variant.name);
    if (!trim) trims.push((trim = { variant: variant.name, cachedBefore: [], cachedAfter: [], firstMs: [], warmMs: [] }));
    trim.cachedBefore.push(cachedPages(variant.binary));
    await Bun.sleep(Math.max(0, requestedAt + IDLE_TRIM_WAIT_MS - Date.now()));
    record("idle: past its quiet period", await idleMemory(child.pid));
    trim.cachedAfter.push(cachedPages(variant.binary));
    trim.firstMs.push(await initialize(socket));
    trim.warmMs.push(await initialize(socket));
    if (pageOut(child.pid, variant.binary)) {
      record("executable paged out (kernel asked)", await idleMemory(child.pid));
      await initialize(socket);
      record("then one more initialize", await idleMemory(child.pid));
    }
  } catch (error) {
    const text = readFileSync(join(daemonDir, "app-server.log"), "utf8").trim().split("\n").slice(-5).join("\n");
    throw new Error(`${(error as Error).message}; its log ends:\n${text}`);
  } finally {
    await stop(child);
  }
}

async function main(): Promise<void> {
  const floorEntry = join(base, "empty.ts");
  writeFileSync(floorEntry, 'if (process.argv[2] === "idle") setInterval(() => {}, 1 << 30);\n');
  const floorBinary = join(base, "floor");
  const floor = await Bun.build({ entrypoints: [floorEntry], compile: { outfile: floorBinary, autoloadBunfig: false, autoloadDotenv: false } });
  if (!floor.success) throw new Error("the empty program did not compile");
  const variants: Variant[] = [{ name: "Bun floor (empty program)", binary: floorBinary, server: false, id: 0 }];
  const checkouts: Array<[string, string]> = [];
  if (process.env.BENCH_BASE) checkouts.push([`app-server, ${process.env.BENCH_BASE}`, resolve(process.env.BENCH_BASE)]);
  checkouts.push(["app-server, this checkout", resolve(import.meta.dir, "..")]);
  for (const [i, [name, dir]] of checkouts.entries()) {
    const binary = join(base, `berth-${i}`);
    const { compile } = (await import(join(dir, "build.ts"))) as typeof import("../build.ts");
    await compile({ version: "0.0.0-bench", outfile: binary });
    variants.push({ name, binary, server: true, id: i + 1 });
  }
  const rows: Row[] = [];
  const trims: TrimRow[] = [];
  for (let round = 0; round < ROUNDS; round += 1) {
    for (const variant of variants) {
      process.stderr.write(`bench: ${variant.name}, round ${round + 1}/${ROUNDS}…\n`);
      await measure(variant, round, rows, trims);
    }
  }
  const floorRss = median(rows[0]?.samples ?? []).rss;
  console.log(`\n${machineLine()}, Bun ${Bun.version}, load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}, ${ROUNDS} rounds (medians), page cache ${COLD ? "cold (binary evicted before each start)" : "hot"}\n`);
  console.log("| process | state | RSS | RssAnon | RssFile | PSS | RSS − floor |");
  console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
  for (const row of rows) {
    const m = median(row.samples);
    const over = row.samples === rows[0]?.samples ? "—" : `${m.rss - floorRss >= 0 ? "+" : ""}${(m.rss - floorRss).toFixed(1)} MB`;
    console.log(`| ${row.variant} | ${row.state} | ${m.rss.toFixed(1)} MB | ${m.anon.toFixed(1)} MB | ${m.file.toFixed(1)} MB | ${m.pss.toFixed(1)} MB | ${over} |`);
  }
  const mid = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
  console.log(`\nQuiet period ${IDLE_TRIM_AFTER_MS} ms (idleTrimAfterMs default). Report only.\n`);
  console.log("| process | binary's pages in the page cache, before → after the quiet period | first `initialize` after it | warm `initialize` |");
  console.log("| --- | ---: | ---: | ---: |");
  for (const t of trims) {
    console.log(`| ${t.variant} | ${mid(t.cachedBefore)} → ${mid(t.cachedAfter)} | ${mid(t.firstMs).toFixed(2)} ms | ${mid(t.warmMs).toFixed(2)} ms |`);
  }
}

try {
  await main();
} catch (error) {
  console.error(`bench: failed: ${error instanceof Error ? error.message : String(error)}`);
} finally {
  for (const child of children) {
    child.kill("SIGKILL");
    await child.exited;
  }
  rmSync(base, { recursive: true, force: true });
}
process.exit(0);
