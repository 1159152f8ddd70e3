// Attacks on tunnel/* the way a broken or hostile client would make them,
// against a real `berth serve`: allowHosts spellings that name another host,
// a tunnel storm on one connection, and a peer that accepts and never reads.
import { afterEach, describe, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { readdirSync, readlinkSync } from "node:fs";
import { attackFixtures, rpc, rssMiB } from "./helpers/attack.ts";
import { eventually } from "./helpers/berth.ts";
import type { RawWs } from "./helpers/raw-ws.ts";
import { call, WAIT_MS } from "./helpers/session.ts";
import { DEFAULT_ALLOW_HOSTS, hostAllowed, TUNNELS_PER_CONNECTION_MAX } from "../src/server/api/tunnel.ts";
import { CLOSE_FLUSH_TIMEOUT_MS } from "../src/server/api/tunnel-socket.ts";

const TEST_TIMEOUT_MS = 120_000;
const BLACK_HOLE_WRITES = 200;
/** Tunnels whose peer never reads, each with writes withheld: together far over the connection's 16 MiB in flight. */
const STUCK_TUNNELS = 24;
/** tunnel.ts cuts a closed tunnel's socket after CLOSE_FLUSH_TIMEOUT_MS (10 s); generous for a loaded machine. */
const CLOSE_WAIT_MS = CLOSE_FLUSH_TIMEOUT_MS + 20_000;
/**
 * Tunnels of one connection to a peer that never reads, each sent WRITES_PER_STUCK_TUNNEL pipelined 700 KiB
 * writes (722 MiB offered): under the per-tunnel cap (8 MiB), so only the connection's cap can refuse one.
 */
const MANY_STUCK_TUNNELS = 96;
const WRITES_PER_STUCK_TUNNEL = 11;
/** Tunnels opened, filled the same way and closed one after another, faster than their flush deadline frees them. */
const CLOSED_TUNNEL_ROUNDS = 80;
/**
 * A sanity bound: with the connection's cap (64 MiB), +210 MiB and +140 MiB measured (mostly the
 * garbage of the parsed requests); without it, +900 MiB and +420 MiB (the refusals tell them apart).
 */
const STUCK_RSS_GROWTH_MAX_MIB = 500;
const listeners: TCPSocketListener<unknown>[] = [];
const fx = attackFixtures();
const server = () => fx.server();
const client = fx.client;

afterEach(() => {
  for (const listener of listeners.splice(0)) listener.stop(true);
});

/** Sockets a process holds open (tunnels are the only ones that come and go in these tests besides client connections). */
function tcpSockets(pid: number): number {
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:")) count += 1;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}


/**
 * 700 KiB tunnel/writes sent at once (one per entry of `tunnelIds`), not waiting for answers;
 * the replies by code, all in (the withheld ones are answered with -32001 or by the tunnel's close).
 */
async function pipelinedWrites(ws: RawWs, tunnelIds: string[]): Promise<Map<number | string, number>> {
  const chunk = Buffer.alloc(700 * 1024, 0x64).toString("base64");
  tunnelIds.forEach((tunnelId, i) => ws.send(JSON.stringify({ jsonrpc: "2.0", id: `pw${i}`, method: "tunnel/write", params: { tunnelId, data: chunk } })));
  // Handled in order: once this is answered, every write has been queued or refused.
  expect((await call(ws, "process/list")).processes).toEqual([]);
  const codes = new Map<number | string, number>();
  for (const text of (ws.pending as string[]).splice(0)) {
    const reply = JSON.parse(text) as { id?: string; error?: { code: number } };
    if (typeof reply.id === "string" && reply.id.startsWith("pw")) codes.set(reply.error?.code ?? "ok", (codes.get(reply.error?.code ?? "ok") ?? 0) + 1);
  }
  return codes;
}

/** Writes were refused by the connection's cap (the only one they could pass), and the server grew within the sanity bound. */
function expectConnectionCap(what: string, codes: Map<number | string, number>, pid: number, before: number): void {
  const after = rssMiB(pid);
  console.log(`${what}: replies ${JSON.stringify([...codes])}, RSS ${before.toFixed(1)} → ${after.toFixed(1)} MiB`);
  expect(codes.get(-32001) ?? 0).toBeGreaterThan(0);
  expect(after - before).toBeLessThan(STUCK_RSS_GROWTH_MAX_MIB);
}

/** A loopback TCP server that accepts and then never reads; counts connections accepted. */
function blackHole() {
  const state = { accepted: 0, open: 0 };
  const listener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        state.accepted += 1;
        state.open += 1;
        socket.pause();
      },
      data() {},
      close() {
        state.open -= 1;
      },
    },
  });
  listeners.push(listener);
  return { port: listener.port, state };
}

describe("attack: tunnel/*", () => {
  test("hostAllowed: the requested host is compared as given (it is what gets resolved)", () => {
    for (const host of [" localhost", "localhost ", "127.0.0.1\n", "\t::1", "localhost.", "127.1", "::ffff:127.0.0.1"]) {
      expect([host, hostAllowed(host, DEFAULT_ALLOW_HOSTS)]).toEqual([host, false]);
    }
    expect(hostAllowed("localhost", [" localhost "])).toBe(true);
  });

  test("spellings of other hosts and of loopback outside the list are refused before any connection", async () => {
    const s = await server();
    const ws = await client(s);
    const hole = blackHole();
    const spellings = ["127.1", "0.0.0.0", "0", "localhost.", "2130706433", "0x7f.0.0.1", "127.0.0.01", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "[::ffff:127.0.0.1]", "0:0:0:0:0:0:0:1", "127.0.0.2", "example.com", "localhost.localdomain", "127.0.0.1 ", " localhost", "127.0.0.1\n"];
    for (const host of spellings) {
      const reply = await rpc(ws, "tunnel/open", { host, port: hole.port });
      expect({ host, code: reply.error?.code }).toEqual({ host, code: -32003 });
    }
    expect(hole.state.accepted).toBe(0);
    // The listed spellings work (case and IPv6 brackets aside).
    for (const host of ["127.0.0.1", "localhost", "LOCALHOST"]) expect((await rpc(ws, "tunnel/open", { host, port: hole.port })).result?.tunnelId).toBeString();
  }, TEST_TIMEOUT_MS);

  test(`${TUNNELS_PER_CONNECTION_MAX + 44} tunnels on one connection: the rest get -32001; closed ones free their places; another connection is unaffected`, async () => {
    const s = await server();
    const ws = await client(s);
    const hole = blackHole();
    const before = rssMiB(s.proc.pid);
    const codes = new Map<string | number, number>();
    const ids: string[] = [];
    const replies = await Promise.all(Array.from({ length: TUNNELS_PER_CONNECTION_MAX + 44 }, () => rpc(ws, "tunnel/open", { host: "127.0.0.1", port: hole.port })));
    for (const reply of replies) {
      codes.set(reply.error?.code ?? "ok", (codes.get(reply.error?.code ?? "ok") ?? 0) + 1);
      if (reply.result) ids.push(reply.result.tunnelId);
    }
    expect(Object.fromEntries(codes)).toEqual({ ok: TUNNELS_PER_CONNECTION_MAX, "-32001": 44 });
    const other = await client(s);
    const elsewhere = await rpc(other, "tunnel/open", { host: "127.0.0.1", port: hole.port });
    expect(elsewhere).toMatchObject({ result: { tunnelId: expect.any(String) } });
    // Closed by the client; the peer neither reads nor closes its side: the sockets still go (no fds pile up).
    const open = tcpSockets(s.proc.pid);
    for (const tunnelId of ids) await call(ws, "tunnel/close", { tunnelId });
    expect(await eventually(() => tcpSockets(s.proc.pid) <= open - TUNNELS_PER_CONNECTION_MAX, CLOSE_WAIT_MS, 100)).toBe(true);
    const again = await Promise.all(Array.from({ length: TUNNELS_PER_CONNECTION_MAX }, () => rpc(ws, "tunnel/open", { host: "127.0.0.1", port: hole.port })));
    expect(again.filter((r) => r.result).length).toBe(TUNNELS_PER_CONNECTION_MAX);
    // The connection goes: all its tunnels go with it.
    const withAgain = tcpSockets(s.proc.pid);
    ws.destroy();
    expect(await eventually(() => tcpSockets(s.proc.pid) <= withAgain - TUNNELS_PER_CONNECTION_MAX, WAIT_MS, 100)).toBe(true);
    console.log(`tunnel storm: ${hole.state.accepted} accepted, RSS ${before.toFixed(1)} → ${rssMiB(s.proc.pid).toFixed(1)} MiB`);
  }, TEST_TIMEOUT_MS);

  test("writing to a peer that never reads ends in -32001, and close cuts it after the flush deadline", async () => {
    const s = await server();
    const ws = await client(s);
    const hole = blackHole();
    const before = rssMiB(s.proc.pid);
    const { tunnelId } = await call(ws, "tunnel/open", { host: "127.0.0.1", port: hole.port });
    const chunk = Buffer.alloc(512 * 1024, 0x62).toString("base64");
    for (let i = 0; i < BLACK_HOLE_WRITES; i++) ws.send(JSON.stringify({ jsonrpc: "2.0", id: `w${i}`, method: "tunnel/write", params: { tunnelId, data: chunk } }));
    // Writes past the 8 MiB queue are refused at once; the queued ones wait for the peer (which never reads).
    // Handled in order: once this request is answered, every refusal has been sent.
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: "last", method: "process/list", params: {} }));
    let refused = 0;
    for (let reply = await ws.nextMessage(WAIT_MS); reply.id !== "last"; reply = await ws.nextMessage(WAIT_MS)) {
      if (reply.error?.code === -32001) refused += 1;
    }
    expect(refused).toBeGreaterThan(BLACK_HOLE_WRITES / 2);
    const after = rssMiB(s.proc.pid);
    console.log(`black-hole writes: ${refused} of ${BLACK_HOLE_WRITES} refused, RSS ${before.toFixed(1)} → ${after.toFixed(1)} MiB`);
    expect(after - before).toBeLessThan(150);
    // The connection still works; close cuts the socket by the flush deadline though the peer neither reads nor closes.
    expect((await call(ws, "process/list")).processes).toEqual([]);
    const fds = tcpSockets(s.proc.pid);
    await call(ws, "tunnel/close", { tunnelId });
    expect(await eventually(() => tcpSockets(s.proc.pid) < fds, CLOSE_WAIT_MS, 100)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test(`pipelined writes to ${MANY_STUCK_TUNNELS} tunnels whose peer never reads: what one connection has queued is bounded in all, not only per tunnel`, async () => {
    const s = await server();
    const ws = await client(s);
    const hole = blackHole();
    const before = rssMiB(s.proc.pid);
    const ids: string[] = [];
    for (let i = 0; i < MANY_STUCK_TUNNELS; i++) ids.push((await call(ws, "tunnel/open", { host: "127.0.0.1", port: hole.port })).tunnelId);
    const codes = await pipelinedWrites(ws, ids.flatMap((tunnelId) => Array.from({ length: WRITES_PER_STUCK_TUNNEL }, () => tunnelId)));
    expectConnectionCap(`${MANY_STUCK_TUNNELS} stuck tunnels`, codes, s.proc.pid, before);
  }, TEST_TIMEOUT_MS);

  test("tunnels closed while their peer never reads still count until their bytes are gone: open, fill, close, repeat stays bounded", async () => {
    const s = await server();
    const ws = await client(s);
    const hole = blackHole();
    const before = rssMiB(s.proc.pid);
    const codes = new Map<number | string, number>();
    for (let round = 0; round < CLOSED_TUNNEL_ROUNDS; round++) {
      const { tunnelId } = await call(ws, "tunnel/open", { host: "127.0.0.1", port: hole.port });
      for (const [code, count] of await pipelinedWrites(ws, Array.from({ length: WRITES_PER_STUCK_TUNNEL }, () => tunnelId))) codes.set(code, (codes.get(code) ?? 0) + count);
      // Closed: its queue is flushed for up to CLOSE_FLUSH_TIMEOUT_MS, to a peer that reads nothing.
      await call(ws, "tunnel/close", { tunnelId });
    }
    expectConnectionCap(`${CLOSED_TUNNEL_ROUNDS} filled and closed tunnels`, codes, s.proc.pid, before);
  }, TEST_TIMEOUT_MS);

  test("writes withheld by tunnel flow control on many stuck tunnels never block the connection's other requests", async () => {
    const s = await server();
    const ws = await client(s);
    const hole = blackHole();
    const chunk = Buffer.alloc(700 * 1024, 0x63).toString("base64");
    const ids: string[] = [];
    for (let i = 0; i < STUCK_TUNNELS; i++) ids.push((await call(ws, "tunnel/open", { host: "127.0.0.1", port: hole.port })).tunnelId);
    // Enough per tunnel to pass the kernel's buffers and the 1 MiB low mark: the last writes are withheld.
    for (const tunnelId of ids) for (let i = 0; i < 12; i++) ws.send(JSON.stringify({ jsonrpc: "2.0", id: `${tunnelId}-${i}`, method: "tunnel/write", params: { tunnelId, data: chunk } }));
    expect((await call(ws, "process/list")).processes).toEqual([]);
    for (const tunnelId of ids) await call(ws, "tunnel/close", { tunnelId });
  }, TEST_TIMEOUT_MS);
});
