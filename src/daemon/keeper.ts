/**
 * The keeper's decisions and its state file. The keeper itself (one step per
 * event of the `update-loop`) lives in src/update/keeper-loop.ts; everything
 * here is pure or a plain read/write of `daemon/keeper.json`, which carries
 * the keeper's memory from one step (one short-lived process) to the next.
 */
import { readStateFile, writeFileAtomic } from "../platform/fs.ts";

/** Crashes older than this no longer count towards giving up. */
export const CRASH_WINDOW_MS = 10 * 60_000;
/** This many crashes within the window and the keeper stops trying. */
export const MAX_CRASHES = 5;
export const MAX_BACKOFF_MS = 60_000;

export type RestartDecision = { action: "restart"; delayMs: number } | { action: "giveUp" };

/**
 * Pure: after a crash at `now`, with `crashTimes` (ms, including this one),
 * restart at once the first time, then after 1, 2, 4 … 60 s; give up at the
 * MAX_CRASHES-th crash within CRASH_WINDOW_MS.
 */
export function restartDecision(crashTimes: number[], now: number): RestartDecision {
  const recent = crashTimes.filter((at) => at <= now && now - at < CRASH_WINDOW_MS).length;
  if (recent >= MAX_CRASHES) return { action: "giveUp" };
  if (recent <= 1) return { action: "restart", delayMs: 0 };
  return { action: "restart", delayMs: Math.min(1_000 * 2 ** (recent - 2), MAX_BACKOFF_MS) };
}

/**
 * Pure: the crash times still worth remembering. One "from the future" was
 * counted before the wall clock was set back (NTP at boot, a user): dropped,
 * or it would count again once the clock got there and give up too early.
 */
export function recentCrashes(crashTimes: number[], now: number): number[] {
  return crashTimes.filter((at) => at <= now && now - at < CRASH_WINDOW_MS);
}

/** The longest wait the keeper schedules (backoff; a foreign server's recheck is shorter). */
export const MAX_RETRY_DELAY_MS = MAX_BACKOFF_MS;

/**
 * Pure: when a retry planned at `setAt` (epoch ms; undefined in an older
 * keeper.json) for `at` is due, by a wall clock that may have jumped since:
 * set back, the planned delay counts from now (not the jump plus the delay: a
 * crashed app-server down for an hour after NTP corrected the clock by one);
 * never later than MAX_RETRY_DELAY_MS from now.
 */
export function retryDueAt(at: number, setAt: number | undefined, now: number): number {
  const due = setAt !== undefined && now < setAt ? now + Math.max(0, at - setAt) : at;
  return Math.min(due, now + MAX_RETRY_DELAY_MS);
}

export type LastExit = { at: string; exitCode: number | null; signal: string | null; logTail: string };

export type KeeperState = {
  /** What the keeper last concluded about the app-server. */
  state: "running" | "stopped" | "crashed" | "failed" | "unmanaged";
  restarts: number;
  crashes: number[];
  lastExit?: LastExit;
  failedAt?: string;
  nextRestartAt?: string;
  /** The record whose exit was last counted, so a pidfile still naming it is not counted again. */
  exited?: { pid: number; processStartTime: string };
  /** The record the keeper watches (seen running): its disappearance is a crash. Kept between steps. */
  watching?: { pid: number; processStartTime: string };
  /** Epoch ms before which no restart is attempted (backoff, or a foreign server's recheck). */
  retryAt?: number;
  /** When retryAt was planned (epoch ms), so a wall clock set back since does not stretch the wait (retryDueAt). */
  retrySetAt?: number;
};

function isRecord(value: unknown): value is { pid: number; processStartTime: string } {
  const v = value as { pid?: unknown; processStartTime?: unknown } | null | undefined;
  return Number.isInteger(v?.pid) && typeof v?.processStartTime === "string";
}

export function emptyKeeperState(): KeeperState {
  return { state: "stopped", restarts: 0, crashes: [] };
}

export function readKeeperState(path: string): KeeperState {
  try {
    // As a state file: a FIFO or a link to /dev/zero there is UNSAFE_STATE, never a read that blocks or never ends.
    const text = readStateFile(path);
    if (text === undefined) return emptyKeeperState();
    const parsed: unknown = JSON.parse(text);
    // `null`, `7` or `[]` is damaged too.
    const value = (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? parsed : {}) as Partial<KeeperState>;
    const states = ["running", "stopped", "crashed", "failed", "unmanaged"];
    return {
      ...emptyKeeperState(),
      ...value,
      state: states.includes(value.state as string) ? (value.state as KeeperState["state"]) : "stopped",
      restarts: Number.isInteger(value.restarts) ? (value.restarts as number) : 0,
      crashes: Array.isArray(value.crashes) ? value.crashes.filter((v) => typeof v === "number") : [],
      exited: isRecord(value.exited) ? value.exited : undefined,
      watching: isRecord(value.watching) ? value.watching : undefined,
      retryAt: typeof value.retryAt === "number" ? value.retryAt : undefined,
      retrySetAt: typeof value.retrySetAt === "number" ? value.retrySetAt : undefined,
    };
  } catch (error) {
    // Missing or damaged: the keeper only loses its history.
    if (!(error instanceof SyntaxError)) throw error;
    return emptyKeeperState();
  }
}

export function writeKeeperState(path: string, state: KeeperState): void {
  writeFileAtomic(path, `${JSON.stringify(state)}\n`);
}

export type AppServerState = "running" | "starting" | "stopped" | "crashed" | "failed" | "unmanaged";

/**
 * Pure: what `status` calls the app-server, from its pidfile, whoever answers
 * on the socket, the wanted state and the keeper's verdict.
 */
export function appServerState(input: {
  pid: "missing" | "starting" | "running";
  answer: "ours" | "foreign" | "none";
  wanted: "running" | "stopped";
  keeper?: KeeperState["state"];
}): AppServerState {
  if (input.pid === "starting") return "starting";
  if (input.pid === "running") return "running";
  if (input.answer !== "none") return "unmanaged";
  if (input.wanted === "stopped") return "stopped";
  return input.keeper === "failed" ? "failed" : "crashed";
}
