// Attacks on the connection layer the way a broken or hostile client would
// make them, against a real `berth serve`: malformed frames, odd ids, deep
// nesting, batches, notifications before initialize, and a connection storm.
// After each, another client is served and the server's memory is bounded.
import { describe, expect, test } from "bun:test";
import { attackFixtures, rssMiB } from "./helpers/attack.ts";
import { MAX_CONNECTIONS } from "../src/server/serve.ts";
import { eventually } from "./helpers/berth.ts";
import { connect, UpgradeRefused, type RawWs } from "./helpers/raw-ws.ts";
import { call, WAIT_MS, type ServeProcess } from "./helpers/session.ts";

const TEST_TIMEOUT_MS = 120_000;
const MIB = 1024 * 1024;
const DEEP_ROUNDS = 20;
/** The garbage of one deep frame is collected (high water about 200 MiB); kept, 20 rounds would pass 2 GiB. */
const DEEP_RSS_GROWTH_MAX_MIB = 600;
/** Processes with ~840 KB of argv each: their process/list is 17 MB, over conn.ts MAX_BACKLOG_BYTES (8 MiB). */
const LONG_ARGV_PROCESSES = 20;
const fx = attackFixtures();
const server = () => fx.server();
const initialized = fx.client;

async function raw(s: ServeProcess) {
  return fx.track(await connect(s.socket, { timeoutMs: WAIT_MS }));
}

/** The server still serves a fresh client. */
async function stillServes(s: ServeProcess) {
  const other = await initialized(s);
  expect((await call(other, "process/list")).processes).toEqual([]);
  expect(s.proc.exitCode).toBeNull();
}

describe("attack: the connection layer", () => {
  test("notifications and requests before initialize do nothing but the documented error", async () => {
    const s = await server();
    const ws = await raw(s);
    // A notification for a real method before initialize: no reply, no effect.
    ws.send(JSON.stringify({ jsonrpc: "2.0", method: "process/spawn", params: { argv: ["sh", "-c", "exit 0"] } }));
    ws.send(JSON.stringify({ jsonrpc: "2.0", method: "initialized" }));
    const reply = await ws.request({ method: "process/list", params: {} });
    expect(reply.error.code).toBe(-32002);
    const init = await ws.request({ method: "initialize", params: { clientInfo: { name: "a", version: "1" } } });
    expect(init.result.pid).toBe(s.proc.pid);
    expect((await call(ws, "process/list")).processes).toEqual([]);
  }, TEST_TIMEOUT_MS);

  test("odd ids: objects, arrays, booleans, huge numbers, very long strings", async () => {
    const s = await server();
    const ws = await initialized(s);
    const texts = [
      '{"jsonrpc":"2.0","id":{"a":1},"method":"process/list","params":{}}',
      '{"jsonrpc":"2.0","id":[1],"method":"process/list","params":{}}',
      '{"jsonrpc":"2.0","id":true,"method":"process/list","params":{}}',
      '{"jsonrpc":"2.0","id":1e400,"method":"process/list","params":{}}',
    ];
    for (const text of texts) {
      ws.send(text);
      const reply = await ws.nextMessage(WAIT_MS);
      expect(reply).toEqual({ jsonrpc: "2.0", id: null, error: { code: -32600, message: expect.any(String) } });
    }
    ws.send('{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"process/list","params":{}}');
    expect((await ws.nextMessage(WAIT_MS)).result).toEqual({ processes: [] });
    const longId = "x".repeat(900_000);
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: longId, method: "process/list", params: {} }));
    expect((await ws.nextMessage(WAIT_MS)).id).toBe(longId);
    await stillServes(s);
  }, TEST_TIMEOUT_MS);

  test("deep nesting and a 1 MiB frame of [[[[ are parse errors, not a crash", async () => {
    const s = await server();
    const ws = await initialized(s);
    const before = rssMiB(s.proc.pid);
    const depth = 500_000;
    // 20 of each: a frame's parse garbage (about 100 MiB for 500 000 nested arrays) must not accumulate.
    for (let round = 0; round < DEEP_ROUNDS; round++) {
      for (const frame of ["[".repeat(MIB - 1), "[".repeat(depth) + "]".repeat(depth)]) {
        ws.send(frame);
        expect((await ws.nextMessage(WAIT_MS)).error.code).toBeOneOf([-32700, -32600]);
      }
    }
    // Deeply nested params of a real method: unknown fields are ignored, the call is answered.
    ws.send(`{"jsonrpc":"2.0","id":1,"method":"process/list","params":{"a":${'{"a":'.repeat(100_000)}1${"}".repeat(100_000)}}}`);
    const reply = await ws.nextMessage(WAIT_MS);
    expect(reply.id === 1 || reply.id === null).toBe(true);
    const after = rssMiB(s.proc.pid);
    console.log(`deep nesting: RSS ${before.toFixed(1)} → ${after.toFixed(1)} MiB`);
    expect(after - before).toBeLessThan(DEEP_RSS_GROWTH_MAX_MIB);
    expect((await call(ws, "process/list")).processes).toEqual([]);
    await stillServes(s);
  }, TEST_TIMEOUT_MS);

  test("a JSON-RPC batch is refused as one invalid request; a frame over 1 MiB closes only its connection", async () => {
    const s = await server();
    const ws = await initialized(s);
    ws.send(JSON.stringify([{ jsonrpc: "2.0", id: 1, method: "process/list", params: {} }, { jsonrpc: "2.0", id: 2, method: "process/list", params: {} }]));
    expect(await ws.nextMessage(WAIT_MS)).toEqual({ jsonrpc: "2.0", id: null, error: { code: -32600, message: expect.any(String) } });
    ws.send("[]");
    expect((await ws.nextMessage(WAIT_MS)).error.code).toBe(-32600);
    const big = await initialized(s);
    big.send(`"${"x".repeat(MIB + 10)}"`);
    const closed = await big.waitClosed(WAIT_MS);
    expect(closed.code).toBe(1009);
    expect((await call(ws, "process/list")).processes).toEqual([]);
    await stillServes(s);
  }, TEST_TIMEOUT_MS);

  test("one reply larger than the 8 MiB backlog cap (process/list of processes with long argv) reaches a client that reads, and its connection stays", async () => {
    const s = await server();
    const ws = await initialized(s);
    // Arguments near the kernel's 128 KiB each: every process/list entry is about 840 KB.
    const args = Array.from({ length: 7 }, (_, i) => `${i}${"a".repeat(120 * 1024)}`);
    for (let i = 0; i < LONG_ARGV_PROCESSES; i++) await call(ws, "process/spawn", { argv: ["sh", "-c", "exec sleep 1000", ...args] });
    expect((await call(ws, "process/list")).processes).toHaveLength(LONG_ARGV_PROCESSES);
    // Not closed for that one reply: the connection (and what it is attached to) goes on.
    expect((await call(ws, "system/info")).os).toBe(process.platform);
    expect(await Promise.race([ws.closed.then(() => "closed"), Bun.sleep(0).then(() => "open")])).toBe("open");
  }, TEST_TIMEOUT_MS);

  test(`${MAX_CONNECTIONS + 88} connections twice: the rest get 503; once all close, the full count is served again`, async () => {
    const s = await server();
    const before = rssMiB(s.proc.pid);
    const rounds: number[] = [];
    for (let round = 0; round < 2; round++) {
      const open: RawWs[] = [];
      let refused = 0;
      for (let i = 0; i < MAX_CONNECTIONS + 88; i++) {
        try {
          const ws = await connect(s.socket, { timeoutMs: WAIT_MS });
          open.push(ws);
          fx.track(ws);
        } catch (error) {
          expect(error).toBeInstanceOf(UpgradeRefused);
          expect((error as UpgradeRefused).status).toBe(503);
          refused += 1;
        }
      }
      rounds.push(open.length);
      expect(refused).toBe(88);
      // Half close cleanly, half vanish without a close frame.
      await Promise.all(open.map((ws, i) => (i % 2 === 0 ? ws.close(1000, WAIT_MS).catch(() => {}) : (ws.destroy(), undefined))));
      // The count recovers: a full set is accepted again (round 2 checks it).
      expect(await eventually(async () => {
        try {
          const probe = await connect(s.socket, { timeoutMs: 2_000 });
          probe.destroy();
          return true;
        } catch {
          return false;
        }
      }, WAIT_MS)).toBe(true);
      await Bun.sleep(0);
    }
    console.log(`connection storm: accepted per round ${rounds.join(", ")}; RSS ${before.toFixed(1)} → ${rssMiB(s.proc.pid).toFixed(1)} MiB`);
    expect(rounds).toEqual([MAX_CONNECTIONS, MAX_CONNECTIONS]);
    await stillServes(s);
  }, TEST_TIMEOUT_MS);
});
