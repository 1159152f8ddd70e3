/**
 * The updater never cuts a user's sessions short for an update: while the
 * app-server hosts running processes, the loop installs the new release but
 * waits with the restart, until none runs or `update.maxRestartDeferMs` has
 * passed since it first had to wait. `status` shows the wait as
 * `pendingRestart: {version, since}` (kept in updater-state.json).
 */
import { changeUpdaterState, readUpdaterState, type PendingRestart } from "../daemon/updater.ts";
import type { Context } from "../daemon/context.ts";
import type { Settings } from "../daemon/settings.ts";
import { isOurServer } from "../daemon/app-server.ts";
import { countRunningProcesses, probeInitialize } from "../server/client.ts";
import { shouldRestart } from "./decide.ts";

const PROCESS_COUNT_TIMEOUT_MS = 2_000;

/** Pure: must the restart onto `version` wait? */
export function restartMustWait(input: { runningProcesses: number | undefined; sinceMs: number; nowMs: number; maxDeferMs: number }): boolean {
  if (!input.runningProcesses) return false;
  return input.nowMs - input.sinceMs < input.maxDeferMs;
}

/**
 * Pure: when the wait for the restart onto `version` began: as recorded for that version, unless the record
 * lies ahead of the wall clock (set back since, or damaged): then it begins now, or a clock set back by a day
 * would hold the restart a day past update.maxRestartDeferMs.
 */
export function deferredSince(pending: PendingRestart | undefined, version: string, nowMs: number): string {
  const recorded = pending?.version === version ? Date.parse(pending.since) : Number.NaN;
  return recorded <= nowMs ? (pending as PendingRestart).since : new Date(nowMs).toISOString();
}

/** Loop only: true (and pendingRestart recorded) while the restart onto `version` must wait for processes. */
export async function restartWaitsForProcesses(ctx: Context, settings: Settings, version: string): Promise<boolean> {
  const probe = await probeInitialize(ctx.socket.path, PROCESS_COUNT_TIMEOUT_MS);
  if (!isOurServer(ctx, probe) || !shouldRestart({ managed: true, version: probe.info.serverInfo.version }, version)) return false;
  const runningProcesses = await countRunningProcesses(ctx.socket.path, PROCESS_COUNT_TIMEOUT_MS);
  const state = readUpdaterState(ctx.layout.updaterState);
  const now = new Date();
  const since = deferredSince(state.pendingRestart, version, now.getTime());
  const wait = restartMustWait({ runningProcesses, sinceMs: Date.parse(since), nowMs: now.getTime(), maxDeferMs: settings.update.maxRestartDeferMs });
  if (wait) {
    const pendingRestart: PendingRestart = { version, since, runningProcesses: runningProcesses as number };
    changeUpdaterState(ctx.layout.updaterState, (current) => ({ ...current, pendingRestart }));
  }
  return wait;
}

/** The restart happened (or is no longer needed): status stops showing it. */
export function clearPendingRestart(ctx: Context): void {
  if (!readUpdaterState(ctx.layout.updaterState).pendingRestart) return;
  changeUpdaterState(ctx.layout.updaterState, ({ pendingRestart: _done, ...rest }) => rest);
}
