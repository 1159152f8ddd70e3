#!/usr/bin/env bun
/**
 * Tunnel and fs benchmark against a real `berth serve` (from source) in a
 * temporary BERTH_HOME, driven by Bun's own WebSocket client over the Unix
 * socket: tunnel throughput each way next to a direct loopback TCP copy in
 * the same run, fs/readFile of 4 MiB, and fs/changed latency after a write.
 * Prints a markdown table; never fails a build (always exits 0).
 * Run: `bun run bench/tunnel-fs.ts`. Env: BENCH_MIB (default 64), BENCH_RUNS (default 20),
 * BENCH_ROUNDS (direct/tunnel pairs, default 5: medians of the rounds, each ratio from its own round),
 * BENCH_PROFILE=<dir> (the app-server writes a markdown CPU profile there).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "bun";
import { Connection } from "../src/client/connection.ts";
import { classifyPreamble } from "../src/client/lines.ts";
import { raiseUnixSendBuffers } from "../src/platform/ffi.ts";
import { dataRequestText, parseRpcText, reusableBase64Decoder } from "../src/rpc-data.ts";
import { UNIX_SEND_BUFFER_BYTES } from "../src/server/conn.ts";

const MIB = 1024 * 1024;
const TOTAL_BYTES = (Number(process.env.BENCH_MIB) || 64) * MIB;
const RUNS = Number(process.env.BENCH_RUNS) || 20;
const ROUNDS = Number(process.env.BENCH_ROUNDS) || 5;
const READY_TIMEOUT_MS = 15_000;
const CALL_TIMEOUT_MS = 30_000;
const TRANSFER_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 10_000;
const UPLOAD_CHUNK_BYTES = 512 * 1024;
const UPLOAD_WINDOW = 8;
const TCP_CHUNK_BYTES = 256 * 1024;

const base = mkdtempSync(join(tmpdir(), "berth-bench-tunnel-"));
const home = join(base, "home");
const socketPath = join(home, "daemon", "app-server.sock");
mkdirSync(join(home, "daemon"), { recursive: true, mode: 0o700 });
const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: base, BERTH_HOME: home, NO_COLOR: "1" };

function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

/**
 * A minimal JSON-RPC client on Bun's WebSocket (ws+unix), doing what berth's
 * client library does with bulk data: frames are parsed with parseRpcText (no
 * JSON parser run over a big base64 `data`) and tunnel/write texts are built
 * around the base64 (dataRequestText) instead of stringified, tunnel/data is
 * decoded into a reused buffer (reusableBase64Decoder, as remote forward does), and its socket's
 * kernel send buffer is raised as `berth connect` raises its own on its first backlog.
 */
class Rpc {
  private nextId = 1;
  private readonly calls = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  readonly handlers = new Map<string, (params: any) => void>();
  private constructor(private readonly ws: WebSocket) {
    ws.onmessage = (event) => {
      const message = parseRpcText(String(event.data)) as any;
      if (typeof message.method === "string") this.handlers.get(message.method)?.(message.params);
      else {
        const call = this.calls.get(message.id);
        this.calls.delete(message.id);
        if (message.error) call?.reject(new Error(`${message.error.message} (${message.error.code})`));
        else call?.resolve(message.result);
      }
    };
  }
  static async open(path: string): Promise<Rpc> {
    const ws = new WebSocket(`ws+unix://${path}`);
    await deadline(new Promise<void>((resolve, reject) => ((ws.onopen = () => resolve()), (ws.onerror = () => reject(new Error("connect failed"))))), 2_000, "connect");
    const rpc = new Rpc(ws);
    raiseUnixSendBuffers(path, UNIX_SEND_BUFFER_BYTES);
    await rpc.call("initialize", { clientInfo: { name: "bench-tunnel-fs", version: "1" } });
    ws.send(JSON.stringify({ jsonrpc: "2.0", method: "initialized" }));
    return rpc;
  }
  call(method: string, params?: unknown): Promise<any> {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    return this.reply(id, method);
  }
  /** A call whose params carry `base64` as `data`. */
  callData(method: string, params: Record<string, unknown>, base64: string): Promise<any> {
    const id = this.nextId++;
    this.ws.send(dataRequestText(id, method, params, base64));
    return this.reply(id, method);
  }
  private reply(id: number, method: string): Promise<any> {
    const reply = new Promise<any>((resolve, reject) => this.calls.set(id, { resolve, reject }));
    return deadline(reply, CALL_TIMEOUT_MS, method);
  }
  close() {
    this.ws.close();
  }
}

/** A loopback TCP peer that counts what it receives and can stream `TOTAL_BYTES` out. */
function tcpPeer() {
  let received = 0;
  let onReceived: () => void = () => {};
  let onDrain: () => void = () => {};
  let peer: Socket<undefined> | undefined;
  let onOpen: (s: Socket<undefined>) => void = () => {};
  const listener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open: (socket) => {
        peer = socket;
        onOpen(socket);
      },
      data: (_s, data) => {
        received += data.length;
        onReceived();
      },
      drain: () => onDrain(),
    },
  });
  return {
    port: listener.port,
    received: () => received,
    untilReceived: (bytes: number) =>
      deadline(new Promise<void>((resolve) => (onReceived = () => received >= bytes && resolve())), TRANSFER_TIMEOUT_MS, "receiving"),
    connected: () => (peer ? Promise.resolve(peer) : new Promise<Socket<undefined>>((resolve) => (onOpen = resolve))),
    drained: () => new Promise<void>((resolve) => (onDrain = resolve)),
    stop: () => listener.stop(true),
  };
}

/** Writes `bytes` of `chunk` repeated to a Bun socket, waiting on drain. */
async function pump(socket: Socket<undefined>, bytes: number, drained: () => Promise<void>) {
  const chunk = randomBytes(TCP_CHUNK_BYTES);
  let sent = 0;
  while (sent < bytes) {
    const piece = chunk.subarray(0, Math.min(chunk.length, bytes - sent));
    const written = socket.write(piece);
    if (written < 0) throw new Error("socket closed");
    sent += written;
    if (written < piece.length) await drained();
  }
}

const mbps = (bytes: number, ms: number) => bytes / MIB / (ms / 1000);

let serverPid = 0;
/** CPU ms used so far by the app-server (utime + stime from /proc, Linux) — a load-independent cost. */
function serverCpuMs(): number {
  try {
    const fields = readFileSync(`/proc/${serverPid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return Number.NaN;
  }
}
const clientCpuMs = () => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
};
type Cost = { server: number; client: number };
/** CPU summed over all rounds, per direction. */
const costs: Record<string, Cost> = { up: { server: 0, client: 0 }, down: { server: 0, client: 0 } };
async function measured<T>(name: "up" | "down", run: () => Promise<T>): Promise<T> {
  const server = serverCpuMs();
  const client = clientCpuMs();
  const result = await run();
  costs[name]!.server += serverCpuMs() - server;
  costs[name]!.client += clientCpuMs() - client;
  return result;
}

async function directCopy(): Promise<{ up: number; down: number }> {
  const peer = tcpPeer();
  let clientReceived = 0;
  let onClient: () => void = () => {};
  let clientDrain: () => void = () => {};
  const client = await Bun.connect({
    hostname: "127.0.0.1",
    port: peer.port,
    socket: { data: (_s, d) => ((clientReceived += d.length), onClient()), drain: () => clientDrain() },
  });
  const server = await peer.connected();
  let start = performance.now();
  const got = peer.untilReceived(TOTAL_BYTES);
  await pump(client, TOTAL_BYTES, () => new Promise((r) => (clientDrain = r)));
  await got;
  const up = mbps(TOTAL_BYTES, performance.now() - start);
  start = performance.now();
  const down = deadline(new Promise<void>((r) => (onClient = () => clientReceived >= TOTAL_BYTES && r())), TRANSFER_TIMEOUT_MS, "direct download");
  await pump(server, TOTAL_BYTES, peer.drained);
  await down;
  const result = { up, down: mbps(TOTAL_BYTES, performance.now() - start) };
  client.end();
  peer.stop();
  return result;
}

/** What a tunnel copy needs of a client. */
type TunnelClient = {
  call(method: string, params: object): Promise<any>;
  /** tunnel/write of `bytes` (whose base64 is `base64`), answered when the server took it. */
  write(tunnelId: string, bytes: Uint8Array, base64: string): Promise<unknown>;
  /** Each tunnel/data's base64; returns the unsubscribe. */
  onData(listener: (base64: string) => void): () => void;
};

/** The bench's WebSocket client: one chunk encoded once, its text built around the base64. */
function rpcClient(rpc: Rpc): TunnelClient {
  return {
    call: (method, params) => rpc.call(method, params),
    write: (tunnelId, _bytes, base64) => rpc.callData("tunnel/write", { tunnelId }, base64),
    onData: (listener) => {
      rpc.handlers.set("tunnel/data", (p) => listener(p.data));
      return () => rpc.handlers.delete("tunnel/data");
    },
  };
}

/** berth's client library over `berth connect` (what remote forward uses, minus ssh): each write encoded as forward does. */
function libraryClient(conn: Connection): TunnelClient {
  return {
    call: (method, params) => conn.call(method, params),
    write: (tunnelId, bytes) => conn.callData("tunnel/write", { tunnelId }, bytes),
    onData: (listener) => conn.on("tunnel/data", (p) => listener(p.data)),
  };
}

/** `berth connect --no-start` as a child, its pipes driven by the client library's Connection. */
async function openLibraryConnection(): Promise<Connection> {
  const child = Bun.spawn([process.execPath, join(import.meta.dir, "..", "src", "main.ts"), "connect", "--no-start"], {
    env,
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  const conn = new Connection("bench", child);
  const connected = new Promise<void>((resolve) =>
    conn.start((line) => {
      const ready = classifyPreamble(line).kind === "connected";
      if (ready) resolve();
      return ready;
    }),
  );
  await deadline(connected, READY_TIMEOUT_MS, "berth connect");
  await conn.call("initialize", { clientInfo: { name: "bench-tunnel-fs", version: "1" } });
  conn.notify("initialized");
  return conn;
}

/** One tunnel, TOTAL_BYTES up then down; `track`: add the CPU used to `costs`. */
async function tunnelCopy(client: TunnelClient, track: boolean): Promise<{ up: number; down: number }> {
  const peer = tcpPeer();
  let clientReceived = 0;
  let onClient: () => void = () => {};
  const decode = reusableBase64Decoder(); // as remote forward does: the bytes go straight into a socket
  const stop = client.onData((base64) => {
    clientReceived += decode(base64).length;
    onClient();
  });
  const { tunnelId } = await client.call("tunnel/open", { host: "127.0.0.1", port: peer.port });
  const server = await peer.connected();
  const bytes = randomBytes(UPLOAD_CHUNK_BYTES);
  const chunk = bytes.toString("base64");
  const timed = (way: "up" | "down", run: () => Promise<void>) => (track ? measured(way, run) : run());
  let start = performance.now();
  await timed("up", async () => {
    const got = peer.untilReceived(TOTAL_BYTES);
    const inFlight = new Set<Promise<unknown>>();
    for (let sent = 0; sent < TOTAL_BYTES; sent += UPLOAD_CHUNK_BYTES) {
      const write = client.write(tunnelId, bytes, chunk).finally(() => inFlight.delete(write));
      inFlight.add(write);
      if (inFlight.size >= UPLOAD_WINDOW) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    await got;
  });
  const up = mbps(TOTAL_BYTES, performance.now() - start);
  start = performance.now();
  await timed("down", async () => {
    const down = deadline(new Promise<void>((r) => (onClient = () => clientReceived >= TOTAL_BYTES && r())), TRANSFER_TIMEOUT_MS, "tunnel download");
    await pump(server, TOTAL_BYTES, peer.drained);
    await down;
  });
  const result = { up, down: mbps(TOTAL_BYTES, performance.now() - start) };
  await client.call("tunnel/close", { tunnelId });
  stop();
  peer.stop();
  return result;
}

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}
function p90(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))] as number;
}

async function readFileTimes(rpc: Rpc): Promise<number[]> {
  const path = join(base, "four-mib.bin");
  writeFileSync(path, randomBytes(4 * MIB));
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const start = performance.now();
    const { data } = await rpc.call("fs/readFile", { path });
    Buffer.from(data, "base64"); // a client decodes what it reads
    times.push(performance.now() - start);
  }
  return times;
}

async function changeLatencies(rpc: Rpc): Promise<number[]> {
  const dir = join(base, "watched");
  mkdirSync(dir);
  const { watchId } = await rpc.call("fs/watch", { path: dir });
  let onChange: () => void = () => {};
  rpc.handlers.set("fs/changed", (p) => p.watchId === watchId && onChange());
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const arrived = deadline(new Promise<void>((r) => (onChange = r)), CALL_TIMEOUT_MS, "fs/changed");
    const start = performance.now();
    writeFileSync(join(dir, `f${i}`), "x");
    await arrived;
    times.push(performance.now() - start);
  }
  await rpc.call("fs/unwatch", { watchId });
  return times;
}

async function main() {
  // BENCH_PROFILE=<dir>: the app-server writes a markdown CPU profile there when it stops.
  const profile = process.env.BENCH_PROFILE ? ["--cpu-prof-md", "--cpu-prof-interval=250", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [];
  const proc = Bun.spawn([process.execPath, ...profile, join(import.meta.dir, "..", "src", "main.ts"), "serve", "--listen", `unix://${socketPath}`], {
    env,
    stdin: "ignore",
    stdout: "ignore",
    stderr: "inherit",
  });
  serverPid = proc.pid;
  try {
    let rpc: Rpc | undefined;
    const readyBy = Date.now() + READY_TIMEOUT_MS;
    while (!rpc && Date.now() < readyBy) {
      rpc = await Rpc.open(socketPath).catch(() => undefined);
      if (!rpc) await Bun.sleep(50);
    }
    if (!rpc) throw new Error("berth serve did not become ready");
    console.error(`copying ${TOTAL_BYTES / MIB} MiB each way, direct then through a tunnel, ${ROUNDS} rounds…`);
    type Rates = { up: number; down: number };
    const rounds: Array<{ direct: Rates; tunnel: Rates; connect: Rates }> = [];
    const library = await openLibraryConnection();
    for (let round = 0; round < ROUNDS; round++) {
      rounds.push({ direct: await directCopy(), tunnel: await tunnelCopy(rpcClient(rpc), true), connect: await tunnelCopy(libraryClient(library), false) });
    }
    await library.close();
    const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
    console.error(`fs/readFile and fs/changed, ${RUNS} runs each…`);
    const reads = await readFileTimes(rpc);
    const changes = await changeLatencies(rpc);
    rpc.close();
    const f = (n: number) => n.toFixed(1);
    console.log(`| measure | value | reference |`);
    console.log(`| --- | --- | --- |`);
    for (const [path, label] of [["tunnel", ""], ["connect", " via `berth connect` + client library"]] as const) {
      for (const way of ["up", "down"] as const) {
        const ratios = rounds.map((r) => r[path][way] / r.direct[way]);
        const name = way === "up" ? `tunnel upload${label} (client → TCP)` : `tunnel download${label} (TCP → client)`;
        const range = `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}`;
        const target = path === "tunnel" ? "; target ≥ 0.3×" : "";
        console.log(
          `| ${name}, ${TOTAL_BYTES / MIB} MiB × ${ROUNDS} rounds (median) | ${f(median(rounds.map((r) => r[path][way])))} MB/s | direct ${f(median(rounds.map((r) => r.direct[way])))} MB/s → ${median(ratios).toFixed(2)}× (rounds ${range}${target}) |`,
        );
      }
    }
    const mibMoved = (TOTAL_BYTES / MIB) * ROUNDS;
    const perMib = (c: Cost) => `app-server ${(c.server / mibMoved).toFixed(2)} ms/MiB, bench process (client + TCP peer) ${(c.client / mibMoved).toFixed(2)} ms/MiB`;
    console.log(`| CPU per MiB, tunnel upload | ${perMib(costs.up!)} | |`);
    console.log(`| CPU per MiB, tunnel download | ${perMib(costs.down!)} | |`);
    console.log(`| fs/readFile 4 MiB (median / p90) | ${f(median(reads))} / ${f(p90(reads))} ms | ${f(mbps(4 * MIB, median(reads)))} MB/s |`);
    console.log(`| fs/changed after a write (median / p90) | ${f(median(changes))} / ${f(p90(changes))} ms | includes the 50 ms coalescing window |`);
    console.log(`| load average after the tunnel rounds (1/5/15 min) | ${load} | 2 cores |`);
  } catch (error) {
    console.error(`bench failed: ${(error as Error).message}`);
  } finally {
    proc.kill("SIGTERM");
    const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(STOP_TIMEOUT_MS).then(() => false)]);
    if (!exited) proc.kill("SIGKILL");
    rmSync(base, { recursive: true, force: true });
  }
}

await main();
process.exit(0);
