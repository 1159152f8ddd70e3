/**
 * Test helper for the attack tests: a real `berth serve` per test with its
 * initialized clients, all ended after each test (by pid), plus the server's
 * resident memory read from /proc.
 */
import { afterEach } from "bun:test";
import { readFileSync } from "node:fs";
import { eventually, pidsKilledPerTest } from "./berth.ts";
import type { RawWs } from "./raw-ws.ts";
import { servesPerTest, WAIT_MS } from "./session.ts";

export type RpcReply = { id?: unknown; result?: any; error?: { code: number; message: string; data?: any } };

/** Resident memory of a process in MiB (VmRSS). */
export function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:")) ?? "VmRSS: 0 kB";
  return Number(line.split(/\s+/)[1]) / 1024;
}

/**
 * How long a server that has gone idle may take to give back the garbage of a burst. Measured on `berth serve`:
 * 100 exited processes of 2 MiB output in a fast loop leave +105 MiB of RSS at the loop's end, +21 MiB a second later.
 */
const RSS_SETTLE_WAIT_MS = 20_000;

/**
 * What a process keeps, not what it has yet to collect: its RSS growth over `beforeMiB` once that is under `maxMiB`
 * (the last growth seen if it never gets there within RSS_SETTLE_WAIT_MS). Memory a server retains never comes back;
 * an RSS read right after a burst measured its garbage collector's lag, which depends on how fast the client was.
 */
export async function settledGrowthMiB(pid: number, beforeMiB: number, maxMiB: number): Promise<number> {
  let growth = rssMiB(pid) - beforeMiB;
  await eventually(() => (growth = rssMiB(pid) - beforeMiB) < maxMiB, RSS_SETTLE_WAIT_MS, 100);
  return growth;
}

/** Samples a process's RSS every few ms until the returned function is called; that returns the peak seen. */
export function rssPeak(pid: number): () => number {
  let peak = rssMiB(pid);
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssMiB(pid));
    } catch {
      // gone
    }
  }, 5);
  return () => {
    clearInterval(timer);
    return peak;
  };
}

/** One request; its reply, error included. */
export async function rpc(ws: RawWs, method: string, params: unknown): Promise<RpcReply> {
  return (await ws.request({ method, params }, WAIT_MS)) as RpcReply;
}

/** Servers and clients of one test file, ended after each test; `strangers` are pids to SIGKILL too. */
export function attackFixtures() {
  return { strangers: pidsKilledPerTest(afterEach), ...servesPerTest(afterEach) };
}
