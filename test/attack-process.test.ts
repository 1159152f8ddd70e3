// Attacks on process/* the way a broken or hostile client would make them,
// against a real `berth serve` on a real socket: the server's memory stays
// bounded, errors are the documented ones, and nothing is signalled that is
// not proven ours.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { attackFixtures, rpc, rssMiB, settledGrowthMiB } from "./helpers/attack.ts";
import { eventually, isAlive } from "./helpers/berth.ts";
import type { RawWs } from "./helpers/raw-ws.ts";
import { apiClient, call, OutputCollector, WAIT_MS, type ServeProcess } from "./helpers/session.ts";

/**
 * Generous: the exited-process cases move 200 MiB through 100 spawns, ~6 s on an idle 2-core machine but past
 * 120 s once under a load of 10 (a full suite beside other builds); a per-test timeout must never be what fails.
 */
const TEST_TIMEOUT_MS = 400_000;
/** 600 writes of 512 KiB: 300 MiB offered to a process that reads none of it. */
const FLOOD_WRITES = 600;
/** Unbounded buffering grows the server by more than the 300 MiB offered; bounded, by the 4 MiB cap plus garbage. */
const FLOOD_RSS_GROWTH_MAX_MIB = 150;
const FLOOD_CHUNK = Buffer.alloc(512 * 1024, 0x61).toString("base64");
/** 100 processes each leaving 2 MiB of scrollback: 200 MiB if every exited one is kept for retainExitedMs. */
const EXITED_SPAWNS = 100;
const EXITED_RSS_GROWTH_MAX_MIB = 100;
const fx = attackFixtures();
const server = fx.server;

async function client(s: ServeProcess) {
  const ws = await fx.client(s);
  return { ws, out: new OutputCollector(ws) };
}

/** FLOOD_WRITES writes of 512 KiB to a process that reads none of them: the replies by code and the server's growth. */
async function flood(s: ServeProcess, ws: RawWs, processId: string, what: string) {
  const before = rssMiB(s.proc.pid);
  const codes = new Map<number | string, number>();
  for (let i = 0; i < FLOOD_WRITES; i++) {
    const reply = await rpc(ws, "process/write", { processId, data: FLOOD_CHUNK });
    const key = reply.error ? reply.error.code : "ok";
    codes.set(key, (codes.get(key) ?? 0) + 1);
  }
  const after = rssMiB(s.proc.pid);
  console.log(`${what} flood: 300 MiB offered, replies ${JSON.stringify([...codes])}, RSS ${before.toFixed(1)} → ${after.toFixed(1)} MiB`);
  expect(after - before).toBeLessThan(FLOOD_RSS_GROWTH_MAX_MIB);
  expect(codes.get(-32603)).toBeUndefined();
}

describe("attack: process/*", () => {
  test("a flood of writes to a process that never reads its stdin does not grow the server without bound", async () => {
    const s = await server();
    const { ws } = await client(s);
    // Reads nothing until SIGUSR1, then everything.
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", 'trap "exec cat >/dev/null" USR1; while :; do sleep 0.05; done'] });
    await flood(s, ws, p.processId, "stdin");
    // The process and the connection are unharmed.
    expect(isAlive(p.pid)).toBe(true);
    expect((await call(ws, "process/list")).processes[0].state).toBe("running");
    // Once the process reads, its input is taken again.
    await call(ws, "process/signal", { processId: p.processId, signal: "SIGUSR1" });
    expect(await eventually(async () => !(await rpc(ws, "process/write", { processId: p.processId, data: FLOOD_CHUNK })).error, WAIT_MS, 50)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("the same flood into a terminal that never reads", async () => {
    const s = await server();
    const { ws } = await client(s);
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", "stty raw -echo; sleep 1000"], terminal: { cols: 80, rows: 24 } });
    await flood(s, ws, p.processId, "terminal");
  }, TEST_TIMEOUT_MS);

  test("write and closeStdin again after closeStdin: answered, never an internal error (the bytes are dropped)", async () => {
    const s = await server();
    const { ws } = await client(s);
    const { process: p } = await call(ws, "process/spawn", { argv: ["sleep", "1000"] });
    await call(ws, "process/closeStdin", { processId: p.processId });
    const second = await rpc(ws, "process/closeStdin", { processId: p.processId });
    const write = await rpc(ws, "process/write", { processId: p.processId, data: Buffer.from("x").toString("base64") });
    console.log("after closeStdin:", JSON.stringify(second), JSON.stringify(write));
    expect(write.error?.code).not.toBe(-32603);
    expect(second.error?.code).not.toBe(-32603);
  }, TEST_TIMEOUT_MS);
});

describe("attack: signals and leftovers", () => {
  test("once the leader is reaped, process/signal signals nothing; its orphaned group member is still ended when the server stops", async () => {
    const s = await server();
    const { ws, out } = await client(s);
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", "sleep 1000 & echo $!; wait"] });
    await out.waitText(p.processId, "stdout", (t) => t.endsWith("\n"));
    const orphan = Number(out.text(p.processId, "stdout").trim());
    fx.strangers.push(orphan);
    expect(isAlive(orphan)).toBe(true);
    // Someone else kills the leader; Bun reaps it; the sleep is reparented away from the server.
    process.kill(p.pid, "SIGKILL");
    expect(await out.waitExited(p.processId)).toEqual({ exitCode: null, signal: "SIGKILL" });
    const signalled = await rpc(ws, "process/signal", { processId: p.processId, signal: "SIGTERM" });
    expect(signalled.error?.code).toBe(-32004);
    expect(isAlive(orphan)).toBe(true);
    // The app-server stops: nothing a session started may outlive it.
    s.proc.kill("SIGTERM");
    expect(await eventually(() => s.proc.exitCode !== null, WAIT_MS)).toBe(true);
    expect(await eventually(() => !isAlive(orphan), WAIT_MS)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("a group member left by a process that exited and was then forgotten (process/remove, or past processes.max exited) is still ended when the server stops", async () => {
    const s = await server({ processes: { max: 2 } });
    const { ws, out } = await client(s);
    // The leader exits at once; its background sleep stays in its group, reparented away from the server.
    const leaveSleep = async () => {
      const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"] });
      await out.waitExited(p.processId);
      const orphan = Number(out.text(p.processId, "stdout").trim());
      fx.strangers.push(orphan);
      expect(isAlive(orphan)).toBe(true);
      return { processId: p.processId as string, orphan };
    };
    const removed = await leaveSleep();
    expect((await rpc(ws, "process/remove", { processId: removed.processId })).error).toBeUndefined();
    const evicted = await leaveSleep();
    // Two more exited processes: only processes.max (2) exited ones are kept, so the oldest, `evicted`, is forgotten.
    for (let i = 0; i < 2; i++) await out.waitExited((await call(ws, "process/spawn", { argv: ["true"] })).process.processId);
    const { processes } = await call(ws, "process/list");
    expect(processes.map((p: { processId: string }) => p.processId)).not.toContain(evicted.processId);
    s.proc.kill("SIGTERM");
    expect(await eventually(() => s.proc.exitCode !== null, WAIT_MS)).toBe(true);
    expect(await eventually(() => !isAlive(removed.orphan) && !isAlive(evicted.orphan), WAIT_MS)).toBe(true);
  }, TEST_TIMEOUT_MS);
});

describe("attack: exited processes", () => {
  test("short processes spawned without end do not pile up their scrollback in the server", async () => {
    const max = 4;
    const s = await server({ processes: { max, scrollbackBytes: 2 * 1024 * 1024 } });
    const { ws } = await client(s);
    const before = rssMiB(s.proc.pid);
    for (let i = 0; i < EXITED_SPAWNS; i++) {
      // Each fills its 2 MiB stdout ring and exits; the client detaches at once (it never reads the output).
      const { process: p } = await call(ws, "process/spawn", { argv: ["head", "-c", String(2 * 1024 * 1024), "/dev/zero"] });
      await call(ws, "process/detach", { processId: p.processId });
      expect(await eventually(async () => (await call(ws, "process/list")).processes.every((q: any) => q.state === "exited"), WAIT_MS, 20)).toBe(true);
    }
    const { processes } = await call(ws, "process/list");
    const atEnd = rssMiB(s.proc.pid) - before;
    const growth = await settledGrowthMiB(s.proc.pid, before, EXITED_RSS_GROWTH_MAX_MIB);
    console.log(`${EXITED_SPAWNS} exited processes of 2 MiB output: ${processes.length} kept, RSS ${before.toFixed(1)} MiB, +${atEnd.toFixed(1)} at the loop's end, +${growth.toFixed(1)} once collected`);
    // The newest are kept (the oldest forgotten first), at most processes.max of them.
    expect(processes.length).toBeLessThanOrEqual(max);
    expect(processes.at(-1).streams.stdout.end).toBe(2 * 1024 * 1024);
    expect(growth).toBeLessThan(EXITED_RSS_GROWTH_MAX_MIB);
  }, TEST_TIMEOUT_MS);

  test("a long-lived connection does not keep the processes it attached to alive once they are forgotten", async () => {
    const s = await server({ processes: { retainExitedMs: 1, scrollbackBytes: 2 * 1024 * 1024 } });
    const { ws } = await client(s);
    const before = rssMiB(s.proc.pid);
    for (let i = 0; i < EXITED_SPAWNS; i++) {
      // 2 MiB of output, then it waits for its stdin to close.
      const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", "head -c 2097152 /dev/zero; read x"] });
      // Re-attached from the end, never detached: the connection still follows it when it exits and is forgotten.
      await call(ws, "process/attach", { processId: p.processId, since: { stdout: 2 * 1024 * 1024, stderr: 0 } });
      await call(ws, "process/closeStdin", { processId: p.processId });
      expect(await eventually(async () => (await call(ws, "process/list")).processes.length === 0, WAIT_MS, 20)).toBe(true);
    }
    const atEnd = rssMiB(s.proc.pid) - before;
    const growth = await settledGrowthMiB(s.proc.pid, before, EXITED_RSS_GROWTH_MAX_MIB);
    console.log(`${EXITED_SPAWNS} processes forgotten on one open connection: RSS ${before.toFixed(1)} MiB, +${atEnd.toFixed(1)} at the loop's end, +${growth.toFixed(1)} once collected`);
    expect(growth).toBeLessThan(EXITED_RSS_GROWTH_MAX_MIB);
  }, TEST_TIMEOUT_MS);
});

describe("attack: bad spawns, resizes and attach storms", () => {
  test("cwd a file or missing, argv with NUL, an argument past MAX_ARG_STRLEN, a missing program: documented errors, never -32603", async () => {
    const s = await server();
    const { ws } = await client(s);
    writeFileSync(s.home.path("plain"), "x");
    const cases: Array<[string, object, number]> = [
      ["cwd is a file", { argv: ["true"], cwd: s.home.path("plain") }, -32602],
      ["cwd is missing", { argv: ["true"], cwd: s.home.path("nowhere") }, -32004],
      ["argv with NUL", { argv: ["echo", "a\u0000b"] }, -32602],
      ["env with NUL", { argv: ["true"], env: { X: "a\u0000b" } }, -32602],
      ["missing program", { argv: ["/nonexistent/prog"] }, -32004],
      ["empty argv", { argv: [] }, -32602],
      ["one argument past MAX_ARG_STRLEN", { argv: ["true", "z".repeat(200_000)] }, -32602],
    ];
    for (const [what, params, code] of cases) {
      const reply = await rpc(ws, "process/spawn", params);
      expect({ what, code: reply.error?.code }).toEqual({ what, code });
    }
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh"], terminal: { cols: 80, rows: 24 } });
    for (const [cols, rows] of [[0, 24], [80, 0], [100_000, 24], [80, 1e9], [-1, 5], [1.5, 5]]) {
      expect((await rpc(ws, "process/resize", { processId: p.processId, cols, rows })).error?.code).toBe(-32602);
    }
    expect((await call(ws, "process/resize", { processId: p.processId, cols: 10_000, rows: 10_000 })).process.terminal).toEqual({ cols: 10_000, rows: 10_000 });
    expect((await call(ws, "process/list")).processes.length).toBe(1);
  }, TEST_TIMEOUT_MS);

  test("1 000 attach/detach pairs on one connection, 100 connections attaching and vanishing: nothing accumulates", async () => {
    const s = await server();
    const { ws, out } = await client(s);
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", "while :; do echo tick; sleep 0.01; done"] });
    const before = rssMiB(s.proc.pid);
    for (let i = 0; i < 500; i++) {
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: `a${i}`, method: "process/attach", params: { processId: p.processId, since: { stdout: 0 } } }));
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: `d${i}`, method: "process/detach", params: { processId: p.processId } }));
    }
    await call(ws, "process/attach", { processId: p.processId });
    const others: RawWs[] = [];
    for (let i = 0; i < 100; i++) {
      const other = fx.track(await apiClient(s.socket));
      others.push(other);
      await call(other, "process/attach", { processId: p.processId });
    }
    for (const other of others) other.destroy();
    expect(await eventually(async () => (await call(ws, "process/list")).processes[0].attached === 1, WAIT_MS)).toBe(true);
    await out.waitText(p.processId, "stdout", (t) => t.split("tick").length > 5);
    const after = rssMiB(s.proc.pid);
    console.log(`attach storm: RSS ${before.toFixed(1)} → ${after.toFixed(1)} MiB`);
    expect(after - before).toBeLessThan(100);
  }, TEST_TIMEOUT_MS);

  test("concurrent spawns from many connections never pass processes.max; a name taken concurrently goes to one", async () => {
    const s = await server({ processes: { max: 4 } });
    const conns = await Promise.all(Array.from({ length: 8 }, () => client(s)));
    const replies = await Promise.all(conns.flatMap(({ ws }) => Array.from({ length: 10 }, () => rpc(ws, "process/spawn", { argv: ["sleep", "1000"] }))));
    expect(replies.filter((r) => r.result).length).toBe(4);
    expect(new Set(replies.filter((r) => r.error).map((r) => r.error?.code))).toEqual(new Set([-32001]));
    for (const r of replies) if (r.result) await call(conns[0]!.ws, "process/signal", { processId: r.result.process.processId, signal: "SIGKILL" });
    expect(await eventually(async () => (await call(conns[0]!.ws, "process/list")).processes.every((q: any) => q.state === "exited"), WAIT_MS)).toBe(true);
    const named = await Promise.all(conns.map(({ ws }) => rpc(ws, "process/spawn", { argv: ["sleep", "1000"], name: "only" })));
    expect(named.filter((r) => r.result).length).toBe(1);
    expect(named.filter((r) => r.error?.code === -32602).length).toBe(7);
  }, TEST_TIMEOUT_MS);
});
