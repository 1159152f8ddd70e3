/**
 * A release that becomes ready and then crash-loops: the update's health
 * check (one `initialize` answer, update.ts) passed, but the app-server dies
 * again and again soon after. Without this the keeper gave up after its fifth
 * crash (spec "Supervision") and left the machine with no app-server, while
 * the release it ran happily a minute before was still installed. Each
 * rollout records the release it replaced; when the keeper is about to give
 * up on the release a rollout put in place within ROLLBACK_WINDOW_MS, it
 * flips `current` back and quarantines that release instead, as the loop
 * does for one that never became ready.
 */
import { managedInstall, type Context } from "../daemon/context.ts";
import { changeUpdaterState, readUpdaterState, withQuarantined, type LastRollout } from "../daemon/updater.ts";
import { flipCurrent, withInstallLock } from "../install/release.ts";

/** Crashes this soon after a rollout are blamed on the release (longer after, on whatever else changed). */
export const ROLLBACK_WINDOW_MS = 60 * 60_000;

/** Pure: the release to go back to, when the crash loop is of the release `last` rolled out, recently. */
export function crashLoopRollback(last: LastRollout | undefined, managedVersion: string | null, now: number): string | undefined {
  if (!last || last.version !== managedVersion) return undefined;
  const at = Date.parse(last.at);
  return now >= at && now - at < ROLLBACK_WINDOW_MS ? last.previousReleaseDir : undefined;
}

/** After a rollout onto `version` (its predecessor `previousReleaseDir`): what the keeper needs to undo it. */
export function recordRollout(ctx: Context, version: string, previousReleaseDir: string | null): void {
  try {
    const lastRollout = previousReleaseDir ? { version, previousReleaseDir, at: new Date().toISOString() } : undefined;
    changeUpdaterState(ctx.layout.updaterState, ({ lastRollout: _old, ...state }) => ({ ...state, ...(lastRollout ? { lastRollout } : {}) }));
  } catch {
    // The rollout itself succeeded; a full disk only costs the keeper this way back.
  }
}

/**
 * Under daemon.lock (the keeper's restart): flips `current` back to the
 * release the last rollout replaced and quarantines the one that crash-loops,
 * if crashLoopRollback says so. Returns what it did, or undefined.
 */
export async function rollBackCrashLoop(ctx: Context, now: number): Promise<{ version: string; previous: string } | undefined> {
  // A cheap look first: most give-ups follow no recent rollout, and then install.lock is not waited for.
  if (!crashLoopRollback(readUpdaterState(ctx.layout.updaterState).lastRollout, managedInstall(ctx).version, now)) return undefined;
  // Decided again under install.lock: an update may have installed (and flipped `current` to) another release
  // meanwhile, which this must not flip back to the release before the crash-looping one.
  return withInstallLock(ctx.layout, () => {
    const version = managedInstall(ctx).version;
    const previous = crashLoopRollback(readUpdaterState(ctx.layout.updaterState).lastRollout, version, now);
    if (!previous || !version) return undefined;
    // Quarantined first: a check that sees the previous release current also sees the broken one refused.
    // The record goes last: a step killed half-way leaves it, and the next give-up does the rest.
    changeUpdaterState(ctx.layout.updaterState, (state) => withQuarantined(state, version));
    flipCurrent(ctx.layout, previous);
    changeUpdaterState(ctx.layout.updaterState, ({ lastRollout: _done, ...rest }) => rest);
    return { version, previous };
  });
}
