/**
 * The updater process as the daemon sees it: a pidfile-backed process group,
 * plus the outcome of its last check (written by the loop in src/update/).
 */
import { warn } from "../diagnostics.ts";
import { BerthError, errnoCode } from "../errors.ts";
import { readStateFile, writeFileAtomic } from "../platform/fs.ts";
import { UPDATE_LOOP_ARGV } from "../serve-entry.ts";
import { ExitedAtLaunch, PidBackend } from "./backend.ts";
import { FileLock } from "./lock.ts";
import type { Context } from "./context.ts";
import type { PidRecord } from "./pid-record.ts";

/** The updater gets this long to end on SIGTERM before its group is killed. */
const UPDATER_STOP_GRACE_MS = 10_000;
const STARTING_WAIT_MS = 15_000;

export type UpdaterCheck = {
  at: string;
  outcome: "upToDate" | "updateAvailable" | "updated" | "rolledBack" | "failed" | "deferred" | "quarantined" | "notInRollout";
  message: string;
  latestVersion?: string;
  /** The error code of a failed check (e.g. SIGNATURE_INVALID). */
  code?: string;
};

/** A restart onto `version` the loop holds back while session processes run (src/update/defer.ts). */
export type PendingRestart = { version: string; since: string; runningProcesses: number };

/** The last rollout and the release it replaced (src/update/crash-rollback.ts). */
export type LastRollout = { version: string; previousReleaseDir: string; at: string };

export type UpdaterState = {
  pendingRestart?: PendingRestart;
  lastCheck?: UpdaterCheck;
  nextCheckAt?: string;
  quarantined: string[];
  /** Written by the loop when it starts: its pid and the version of the binary it runs. */
  loop?: { pid: number; version: string };
  /** ETag / Last-Modified of the last verified latest.json, for a conditional GET (src/update/release.ts). */
  latestValidators?: unknown;
  /** The loop's own schedule: when its next check (or rollout retry) is due, kept between its steps. */
  nextRunAt?: string;
  /** An installed release whose restart waits for daemon.lock or session processes (the loop retries it). */
  pendingRollout?: { version: string; previousReleaseDir: string | null };
  lastRollout?: LastRollout;
};

export type UpdaterReport = {
  pendingRestart?: PendingRestart;
  state: "running" | "starting" | "stopped";
  pid?: number;
  version?: string;
  lastCheck?: UpdaterCheck;
  nextCheckAt?: string;
  quarantined: string[];
  logPath: string;
};

export function updaterBackend(ctx: Context): PidBackend {
  return new PidBackend({ pidPath: ctx.layout.updaterPid, trackGroup: true });
}

export function readUpdaterState(path: string): UpdaterState {
  try {
    const parsed = JSON.parse(readStateFile(path) ?? "{}") as unknown;
    // `null`, a number or an array holds no history: treat it as empty rather than crash the loop.
    const value = (parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {}) as Partial<UpdaterState>;
    const { pendingRollout, lastRollout, ...rest } = value;
    const last = lastRollout as Partial<LastRollout> | undefined;
    const validLast = typeof last?.version === "string" && typeof last.previousReleaseDir === "string" && typeof last.at === "string";
    const rollout = pendingRollout as { version?: unknown; previousReleaseDir?: unknown } | undefined;
    const validRollout = typeof rollout?.version === "string" && (rollout.previousReleaseDir === null || typeof rollout.previousReleaseDir === "string");
    return {
      ...rest,
      ...(validRollout ? { pendingRollout } : {}),
      ...(validLast ? { lastRollout } : {}),
      quarantined: Array.isArray(value.quarantined) ? value.quarantined.filter((v) => typeof v === "string") : [],
    };
  } catch (error) {
    // Missing is normal; a damaged state file only loses history, never settings.
    if (errnoCode(error) !== "ENOENT" && !(error instanceof SyntaxError)) throw error;
    return { quarantined: [] };
  }
}

export function writeUpdaterState(path: string, state: UpdaterState): void {
  writeFileAtomic(path, `${JSON.stringify(state, null, 2)}\n`);
}

/** Pure: the state with `version` quarantined (once). */
export function withQuarantined(state: UpdaterState, version: string): UpdaterState {
  return state.quarantined.includes(version) ? state : { ...state, quarantined: [...state.quarantined, version] };
}

/** How long a change of updater-state.json waits for another one (a few ms each) before it goes ahead alone. */
const STATE_CHANGE_WAIT_MS = 2_000;

/**
 * Every change of updater-state.json reads, changes and writes it. The update step, a keeper step (a
 * rollback's quarantine) and a manual `update` do that at the same time, and a change made from a stale read
 * dropped what another had just written (a quarantine lost: the broken release installed again). A short
 * flock on `<file>.lock` serializes them; past STATE_CHANGE_WAIT_MS (a holder stuck) it goes ahead alone.
 */
export function changeUpdaterState(path: string, change: (state: UpdaterState) => UpdaterState): void {
  const lock = FileLock.acquireSync(`${path}.lock`, STATE_CHANGE_WAIT_MS);
  try {
    writeUpdaterState(path, change(readUpdaterState(path)));
  } finally {
    lock?.release();
  }
}

export function updaterReport(ctx: Context): UpdaterReport {
  const pidState = updaterBackend(ctx).inspect();
  const saved = readUpdaterState(ctx.layout.updaterState);
  return {
    state: pidState.kind === "running" ? "running" : pidState.kind === "starting" ? "starting" : "stopped",
    ...(pidState.kind === "running" ? { pid: pidState.record.pid } : {}),
    ...(pidState.kind === "running" && saved.loop?.pid === pidState.record.pid ? { version: saved.loop.version } : {}),
    ...(saved.lastCheck ? { lastCheck: saved.lastCheck } : {}),
    ...(saved.nextCheckAt && pidState.kind === "running" ? { nextCheckAt: saved.nextCheckAt } : {}),
    quarantined: saved.quarantined,
    logPath: ctx.layout.updaterLog,
    ...(saved.pendingRestart && pidState.kind === "running" ? { pendingRestart: saved.pendingRestart } : {}),
  };
}

export async function stopUpdater(ctx: Context): Promise<boolean> {
  const backend = updaterBackend(ctx);
  const state = await backend.pidFile.waitWhileStarting(STARTING_WAIT_MS);
  const stopped = state.kind === "running" && (await backend.stop(state.record, UPDATER_STOP_GRACE_MS)) === "stopped";
  const ended = await endUnrecordedLoops(ctx);
  return stopped || ended > 0;
}

/**
 * Ends every update-loop of this home that no record names (its bootstrap was killed before publishing it),
 * before a launch or after a stop: then a live record means no other loop runs, which `status` relies on
 * (see needsOrphanSearch). Returns how many it ended.
 */
async function endUnrecordedLoops(ctx: Context, found?: readonly PidRecord[]): Promise<number> {
  const orphans = await (await import("./orphans.ts")).endUntrackedUpdaters(ctx, undefined, found);
  if (orphans.ended.length > 0) warn(`ended updater pid ${orphans.ended.join(", ")}: it ran without a record.`);
  return orphans.ended.length;
}

/** Launches the loop from the managed binary unless one runs; returns its pid. */
async function launchUpdater(ctx: Context): Promise<number> {
  try {
    const launched = await updaterBackend(ctx).launch({
      binary: ctx.layout.managedBinary,
      args: [...UPDATE_LOOP_ARGV],
      cwd: ctx.layout.home,
      env: { ...ctx.env, BERTH_HOME: ctx.layout.home },
      logPath: ctx.layout.updaterLog,
    });
    return launched.record.pid;
  } catch (error) {
    if (!(error instanceof ExitedAtLaunch)) throw error;
    const { logTail } = await import("./await-ready.ts");
    throw new BerthError("START_FAILED", `the updater exited at once. Last lines of ${ctx.layout.updaterLog}:\n${logTail(ctx.layout.updaterLog)}`);
  }
}

/** Exactly one updater: stop whichever runs, then launch a new one from the managed binary. */
export async function replaceUpdater(ctx: Context): Promise<number> {
  await stopUpdater(ctx);
  return launchUpdater(ctx);
}

/**
 * Under daemon.lock, after `start`/`restart` (and `connect` starting one) and
 * from `keep`: the keeper runs whenever the app-server is wanted, also with
 * auto-update off and on a hand-made install (spec "Supervision"). Launched
 * detached with no readiness wait: only its record is published before this
 * returns, so `start` pays one spawn, not a second start-up. A launch first
 * ends the loops no record names (one /proc search, only when no keeper runs).
 */
export async function ensureKeeper(ctx: Context, searched?: readonly PidRecord[]): Promise<{ pid?: number; launched: boolean }> {
  const state = updaterBackend(ctx).inspect();
  if (state.kind === "running") return { pid: state.record.pid, launched: false };
  if (state.kind === "starting") return { launched: false };
  await endUnrecordedLoops(ctx, searched);
  return { pid: await launchUpdater(ctx), launched: true };
}

/**
 * ensureKeeper's search for loops no record names, made ahead when no keeper runs: `start` makes it while a fresh
 * app-server starts up on another core and hands it to ensureKeeper, so the ~1 ms search is not paid after the
 * server answers. Each loop found is signalled only while it still has the identity it was found with.
 */
export async function searchBeforeKeeperLaunch(ctx: Context): Promise<PidRecord[] | undefined> {
  if (updaterBackend(ctx).inspect().kind !== "missing") return undefined;
  return (await import("./orphans.ts")).findUpdateLoops(ctx);
}
