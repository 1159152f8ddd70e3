#!/usr/bin/env bun
/**
 * Session benchmark of the compiled binary (issue 9): keystroke round trip
 * through `berth connect` to a raw-mode `cat` in a terminal, terminal output
 * throughput to a client attached through `connect` next to the same bytes
 * through a plain pipe, re-attach with 2 MiB to replay, and the app-server's
 * RSS with 100 concurrent `connect`s each holding a live process. Prints a
 * markdown table next to the targets; never asserts, always exits 0.
 * Run: `bun run bench/sessions.ts`. Env: BENCH_KEYSTROKES (default 300).
 */
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { compile } from "../build.ts";
import { killAll, processesWithEnv } from "./harness.ts";
import { parseRpcText, reusableBase64Decoder } from "../src/rpc-data.ts";
import { CLI_TARGET } from "../src/version.ts";
import { installRelease } from "../test/helpers/berth.ts";
import { readLines } from "../test/helpers/lines.ts";

const VERSION = "0.0.0-bench";
const KEYSTROKES = Math.max(200, Number(process.env.BENCH_KEYSTROKES) || 300);
/** A burst a client can take without falling 8 MiB behind, and one it cannot. */
const BURST_BYTES = 6 * 1024 * 1024;
const FLOOD_BYTES = 32 * 1024 * 1024;
/** Scrollback for the bench: the burst fits, so the client gets every byte (nothing skipped as truncated). */
const SCROLLBACK_BYTES = 8 * 1024 * 1024;
/** Throughput runs, alternating pipe and terminal; medians are reported (the box is loaded). */
const THROUGHPUT_RUNS = 5;
const REPLAY_BYTES = 2 * 1024 * 1024;
const REPLAY_RUNS = 20;
const CONCURRENT_CONNECTS = 100;
const WAIT_MS = 60_000;

const base = mkdtempSync(join(tmpdir(), "berth-bench-sessions-"));
const home = join(base, "home");
const binary = join(base, "berth");
const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: base, BERTH_HOME: home, NO_COLOR: "1" };
const socketPath = join(home, "daemon", "app-server.sock");

type Stats = { median: number; p99: number; n: number };
function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
  return { median: at(0.5), p99: at(0.99), n: sorted.length };
}

async function until(condition: () => boolean, what: string, timeoutMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(1);
  }
}

/** `berth connect` with pipes: lines after the connected line, parsed, handed to `onMessage`. */
class Bridge {
  readonly proc: Subprocess<"pipe", "pipe", "ignore">;
  connected = false;
  onMessage: (message: any) => void = () => {};
  private nextId = 1;
  private replies = new Map<number, any>();

  constructor() {
    this.proc = Bun.spawn([binary, "connect"], { env, stdin: "pipe", stdout: "pipe", stderr: "ignore" });
    void this.read();
  }

  private async read() {
    await readLines(this.proc.stdout, (line) => {
      if (!this.connected) {
        this.connected = line.includes('"status":"connected"');
        return;
      }
      const message = parseRpcText(line) as any; // as berth's client library parses: no JSON parser over a big base64 `data`
      if (message.id !== undefined && !message.method) this.replies.set(message.id, message);
      else this.onMessage(message);
    });
  }

  send(message: object) {
    this.proc.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", ...message })}\n`);
    void this.proc.stdin.flush();
  }

  async call(method: string, params: object = {}): Promise<any> {
    const id = this.nextId++;
    this.send({ id, method, params });
    await until(() => this.replies.has(id), `the reply to ${method}`);
    const reply = this.replies.get(id);
    this.replies.delete(id);
    if (reply.error) throw new Error(`${method}: ${reply.error.message}`);
    return reply.result;
  }

  async open() {
    await until(() => this.connected || this.proc.exitCode !== null, "the connected line");
    if (!this.connected) throw new Error(`connect exited ${this.proc.exitCode}`);
    await this.call("initialize", { clientInfo: { name: "bench", version: VERSION } });
    this.send({ method: "initialized" });
    return this;
  }
}

function serverPid(): number {
  return JSON.parse(readFileSync(join(home, "daemon", "app-server.pid"), "utf8")).pid;
}

function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match ? Number(match[1]) / 1024 : Number.NaN;
}

async function keystrokeRoundTrip(): Promise<Stats> {
  const bridge = await new Bridge().open();
  const { process: p } = await bridge.call("process/spawn", { argv: ["sh", "-c", "stty raw -echo; echo ready; exec cat"], terminal: { cols: 80, rows: 24 } });
  let seen = "";
  bridge.onMessage = (m) => {
    if (m.method === "process/output") seen += Buffer.from(m.params.data, "base64").toString("latin1");
  };
  await until(() => seen.includes("ready"), "the raw terminal");
  const samples: number[] = [];
  for (let i = 0; i < KEYSTROKES; i++) {
    const key = String.fromCharCode(97 + (i % 26));
    // Resolved from the message handler itself, so the sample has no polling delay in it.
    const echoed = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no echo")), WAIT_MS);
      bridge.onMessage = (m) => {
        if (m.method === "process/output" && Buffer.from(m.params.data, "base64").toString("latin1").includes(key)) {
          clearTimeout(timer);
          resolve();
        }
      };
    });
    const started = performance.now();
    bridge.send({ method: "process/write", params: { processId: p.processId, data: Buffer.from(key).toString("base64") } });
    await echoed;
    samples.push(performance.now() - started);
  }
  await bridge.call("process/signal", { processId: p.processId, signal: "SIGKILL" });
  bridge.proc.stdin.end();
  await bridge.proc.exited;
  return stats(samples);
}

/** The same command and bytes through a plain pipe, timed from its first byte to its last (as the terminal is). */
async function pipeThroughput(total: number): Promise<number> {
  const child = Bun.spawn(["sh", "-c", `stty raw 2>/dev/null; head -c ${total} /dev/zero`], { stdout: "pipe" });
  let bytes = 0;
  let first = 0;
  for await (const chunk of child.stdout) {
    if (bytes === 0) first = performance.now();
    bytes += chunk.length;
  }
  await child.exited;
  return bytes / 1024 / 1024 / ((performance.now() - first) / 1000);
}

/** The same command and bytes through a bare pseudo-terminal in this process (no berth): what a pty itself allows. */
async function bareTerminalThroughput(total: number): Promise<number> {
  let bytes = 0;
  let first = 0;
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  const child = Bun.spawn(["sh", "-c", `stty raw; head -c ${total} /dev/zero`], {
    terminal: {
      cols: 80,
      rows: 24,
      data: (_terminal, data) => {
        if (bytes === 0) first = performance.now();
        bytes += data.length;
        if (bytes >= total) done();
      },
    },
  });
  await Promise.race([all, child.exited.then(() => Bun.sleep(1_000))]);
  const mbps = bytes / 1024 / 1024 / ((performance.now() - first) / 1000);
  child.terminal?.close();
  await child.exited;
  return mbps;
}

async function terminalThroughput(total: number, terminal = true): Promise<{ mbps: number; closed: boolean; lostBytes: number }> {
  const bridge = await new Bridge().open();
  let end = 0;
  let received = 0;
  let started = 0;
  const decode = reusableBase64Decoder(); // a client that hands the bytes on (to a terminal) at once
  bridge.onMessage = (m) => {
    if (m.method !== "process/output") return;
    // Timed from the first output to the last, like the pipe: the client's parse and decode are inside.
    if (received === 0) started = performance.now();
    const length = decode(m.params.data).length;
    received += length;
    end = m.params.offset + length;
  };
  const argv = ["sh", "-c", `stty raw${terminal ? "" : " 2>/dev/null"}; head -c ${total} /dev/zero`];
  await bridge.call("process/spawn", terminal ? { argv, terminal: { cols: 80, rows: 24 } } : { argv });
  await until(() => end >= total || bridge.proc.exitCode !== null, "the terminal output");
  const seconds = (performance.now() - started) / 1000;
  const closed = bridge.proc.exitCode !== null;
  bridge.proc.stdin.end();
  await bridge.proc.exited;
  return { mbps: received / 1024 / 1024 / seconds, closed, lostBytes: closed ? 0 : end - received };
}

async function reattachReplay(): Promise<Stats> {
  const writer = await new Bridge().open();
  const { process: p } = await writer.call("process/spawn", { argv: ["sh", "-c", `head -c ${REPLAY_BYTES} /dev/zero; exec sleep 1000`] });
  await (async () => {
    for (;;) {
      const { processes } = await writer.call("process/list");
      if (processes.find((x: any) => x.processId === p.processId)?.streams.stdout.end >= REPLAY_BYTES) return;
      await Bun.sleep(10);
    }
  })();
  await writer.call("process/detach", { processId: p.processId });
  const samples: number[] = [];
  for (let i = 0; i < REPLAY_RUNS; i++) {
    const ws = new WebSocket(`ws+unix://${socketPath}`);
    await new Promise((resolve) => (ws.onopen = resolve));
    let bytes = 0;
    let initialized = false;
    ws.onmessage = (event) => {
      const m = JSON.parse(String(event.data));
      if (m.id === 1) initialized = true;
      if (m.method === "process/output") bytes += Buffer.from(m.params.data, "base64").length;
    };
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { clientInfo: { name: "bench", version: VERSION } } }));
    await until(() => initialized, "initialize");
    const started = performance.now();
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: 2, method: "process/attach", params: { processId: p.processId, since: { stdout: 0 } } }));
    await until(() => bytes >= REPLAY_BYTES, "the replay");
    samples.push(performance.now() - started);
    ws.close();
  }
  await writer.call("process/signal", { processId: p.processId, signal: "SIGKILL" });
  writer.proc.stdin.end();
  await writer.proc.exited;
  return stats(samples);
}

async function concurrentConnects(): Promise<{ before: number; after: number }> {
  const pid = serverPid();
  await Bun.sleep(500);
  const before = rssMb(pid);
  const bridges: Bridge[] = [];
  for (let i = 0; i < CONCURRENT_CONNECTS; i++) bridges.push(new Bridge());
  for (const bridge of bridges) {
    await bridge.open();
    await bridge.call("process/spawn", { argv: ["sleep", "1000"] });
  }
  await Bun.sleep(1_000);
  const after = rssMb(pid);
  for (const bridge of bridges) bridge.proc.kill("SIGKILL");
  return { before, after };
}

async function main() {
  if (!CLI_TARGET) throw new Error("unsupported platform");
  await compile({ version: VERSION, outfile: binary });
  const managed = installRelease(home, VERSION, "");
  copyFileSync(binary, managed);
  chmodSync(managed, 0o755);
  // 100 live processes need more than the default processes.max (64).
  mkdirSync(join(home, "daemon"), { recursive: true, mode: 0o700 });
  writeFileSync(join(home, "daemon", "settings.json"), JSON.stringify({ processes: { max: CONCURRENT_CONNECTS * 2, scrollbackBytes: SCROLLBACK_BYTES } }), { mode: 0o600 });
  const rows: string[] = [];
  const row = (name: string, value: string, target: string) => rows.push(`| ${name} | ${value} | ${target} |`);
  try {
    const keys = await keystrokeRoundTrip();
    row(`keystroke round trip via connect (n=${keys.n})`, `median ${keys.median.toFixed(2)} ms, p99 ${keys.p99.toFixed(2)} ms`, "≤ 1 ms");
    const pipes: number[] = [];
    const ptys: number[] = [];
    type Run = { mbps: number; closed: boolean; lostBytes: number };
    const bursts: Run[] = [];
    const piped: Run[] = [];
    for (let i = 0; i < THROUGHPUT_RUNS; i++) {
      pipes.push(await pipeThroughput(BURST_BYTES));
      ptys.push(await bareTerminalThroughput(BURST_BYTES));
      bursts.push(await terminalThroughput(BURST_BYTES));
      piped.push(await terminalThroughput(BURST_BYTES, false));
    }
    const pipe = stats(pipes).median;
    const pty = stats(ptys).median;
    const middle = (runs: Run[]) => runs.sort((a, b) => a.mbps - b.mbps)[Math.floor(THROUGHPUT_RUNS / 2)] as Run;
    const burst = middle(bursts);
    const pipedBurst = middle(piped);
    const flood = await terminalThroughput(FLOOD_BYTES);
    const closed = (t: { closed: boolean; lostBytes: number }) =>
      t.closed ? " (client closed at the 8 MiB backlog cap)" : t.lostBytes > 0 ? ` (${(t.lostBytes / 1024 / 1024).toFixed(1)} MiB skipped as truncated)` : "";
    row(`terminal output to a client via connect, 6 MiB burst (median of ${THROUGHPUT_RUNS})`, `${burst.mbps.toFixed(0)} MB/s (ratio ${(burst.mbps / pipe).toFixed(2)} to the pipe, ${(burst.mbps / pty).toFixed(2)} to a bare pty)${closed(burst)}`, "≥ 0.5× pipe");
    row(`process output with pipes (no terminal) via connect, 6 MiB (median of ${THROUGHPUT_RUNS})`, `${pipedBurst.mbps.toFixed(0)} MB/s (ratio ${(pipedBurst.mbps / pipe).toFixed(2)})${closed(pipedBurst)}`, "≥ 0.5× pipe");
    row(`the same 6 MiB through a bare pty, no berth (same run, median of ${THROUGHPUT_RUNS})`, `${pty.toFixed(0)} MB/s (ratio ${(pty / pipe).toFixed(2)} to the pipe)`, "what a terminal allows");
    row(`the same 6 MiB through a plain pipe (same run, median of ${THROUGHPUT_RUNS})`, `${pipe.toFixed(0)} MB/s`, "reference");
    row("32 MiB flood, more than the 8 MiB backlog cap (received bytes / time)", `${flood.mbps.toFixed(0)} MB/s${closed(flood)}`, "the client is cut or skips; the process is not slowed");
    const replay = await reattachReplay();
    row(`re-attach replaying 2 MiB (n=${replay.n})`, `median ${replay.median.toFixed(1)} ms, p99 ${replay.p99.toFixed(1)} ms`, "≤ 50 ms");
    const rss = await concurrentConnects();
    row(`app-server RSS, ${CONCURRENT_CONNECTS} connects each with a live process`, `${rss.after.toFixed(0)} MB (idle ${rss.before.toFixed(0)} MB)`, "—");
  } catch (error) {
    rows.push(`| error | ${(error as Error).message} | |`);
  } finally {
    // `down` ends the app-server and the keeper `start` launched; then anything still carrying this BERTH_HOME.
    await Bun.spawn([binary, "down"], { env, stdout: "ignore", stderr: "ignore" }).exited;
    killAll(processesWithEnv(`BERTH_HOME=${env.BERTH_HOME}`));
    rmSync(base, { recursive: true, force: true });
  }
  console.log(`berth ${VERSION}, ${process.platform}-${process.arch}\n\n| measure | value | target |\n| --- | --- | --- |\n${rows.join("\n")}`);
}

await main();
process.exit(0);
