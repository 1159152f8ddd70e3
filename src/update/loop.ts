/**
 * `berth update-loop`: the detached updater. Waits, checks, installs, rolls
 * the app-server onto the new release with a health check, and after a
 * validated restart re-executes itself from the new managed binary.
 */
import { describeError, isBerthError } from "../errors.ts";
import { openContext, settingsOf, type Context } from "../daemon/context.ts";
import { appendLog, captureStdio, logLimitsOf, stdoutIsLog } from "../daemon/log.ts";
import { readUpdaterState, writeUpdaterState } from "../daemon/updater.ts";
import { execReplace } from "../platform/ffi.ts";
import { UPDATE_LOOP_ARGV } from "../serve-entry.ts";
import { CLI_VERSION } from "../version.ts";
import { Keeper } from "./keeper-loop.ts";
import { exitOnTermination } from "./termination.ts";
import type { PendingRollout } from "./update.ts";

/**
 * The updater proper (installer, downloads, signatures) is loaded at the first
 * check, not at launch: a keeper with auto-update off, or waiting for its
 * first check, keeps none of it resident.
 */
const updater = () => import("./update.ts");

/** While a restart waits for daemon.lock, try again this often. */
export const BUSY_RETRY_MS = 1_000;
const FALLBACK_INTERVAL_MS = 3_600_000;

function logLine(ctx: Context, line: string): void {
  try {
    appendLog(ctx.layout.updaterLog, line, logLimitsOf(ctx));
  } catch {
    // a full disk must not end the keeper
  }
}

export async function runUpdateLoop(): Promise<never> {
  const ctx = openContext();
  exitOnTermination();
  if (stdoutIsLog(ctx.layout.updaterLog)) captureStdio(ctx.layout.updaterLog, () => logLimitsOf(ctx));
  let settings = settingsOf(ctx);
  recordLoop(ctx);
  logLine(ctx, `updater pid ${process.pid} (berth ${CLI_VERSION}) started; ${settings.autoUpdate ? `first check in ${settings.update.initialDelayMs} ms` : "auto-update is off: keeping the app-server only"}`);
  void new Keeper(ctx, (line) => logLine(ctx, line)).run();
  if (settings.autoUpdate) recordCheckTime(ctx, settings.update.initialDelayMs);
  await Bun.sleep(settings.update.initialDelayMs);
  let pending: PendingRollout | undefined;
  for (;;) {
    let delayMs = FALLBACK_INTERVAL_MS;
    let reexec = false;
    try {
      settings = settingsOf(ctx);
      delayMs = settings.update.intervalMs;
      if (!settings.autoUpdate && !pending) {
        // Keeper only: look again later in case auto-update is turned on.
      } else if (pending) {
        const { recordCheck, tryRollout } = await updater();
        const rollout = await tryRollout(ctx, pending, "try");
        if (rollout) {
          logLine(ctx, `check: ${rollout.status}: ${rollout.message}`);
          recordCheck(ctx, { at: new Date().toISOString(), outcome: rollout.status, message: rollout.message, latestVersion: pending.version });
          reexec = rollout.status === "updated" && rollout.restarted;
          pending = undefined;
        } else {
          delayMs = BUSY_RETRY_MS;
        }
      } else {
        const { checkOutcome, recordCheck, updateWithRollout } = await updater();
        const outcome = await updateWithRollout(ctx, settings, {}, "try");
        pending = outcome.pending;
        if (pending) delayMs = BUSY_RETRY_MS;
        reexec = outcome.status === "updated" && outcome.restarted;
        logLine(ctx, `check: ${outcome.status}: ${outcome.message}`);
        recordCheck(ctx, { at: new Date().toISOString(), outcome: checkOutcome(outcome.status), message: outcome.message, latestVersion: outcome.latestVersion }, nextAt(delayMs));
      }
    } catch (error) {
      const message = describeError(error).split("\n")[0] ?? "unknown error";
      const code = isBerthError(error) ? error.code : "INTERNAL";
      logLine(ctx, `check: failed: ${code}: ${message}`);
      (await updater()).recordCheck(ctx, { at: new Date().toISOString(), outcome: "failed", message, code }, nextAt(delayMs));
    }
    if (reexec) {
      logLine(ctx, `re-executing from ${ctx.layout.managedBinary}`);
      try {
        execReplace(ctx.layout.managedBinary, [ctx.layout.managedBinary, ...UPDATE_LOOP_ARGV], { ...ctx.env, BERTH_HOME: ctx.layout.home });
      } catch (error) {
        logLine(ctx, `re-exec failed, carrying on with this binary: ${describeError(error)}`);
      }
    }
    await Bun.sleep(delayMs);
  }
}

function nextAt(delayMs: number): string {
  return new Date(Date.now() + delayMs).toISOString();
}

/** Which binary this loop runs, so `status.updater.version` can say it. */
function recordLoop(ctx: Context): void {
  try {
    writeUpdaterState(ctx.layout.updaterState, { ...readUpdaterState(ctx.layout.updaterState), loop: { pid: process.pid, version: CLI_VERSION } });
  } catch {
    // status only loses the loop's version
  }
}

function recordCheckTime(ctx: Context, delayMs: number): void {
  try {
    writeUpdaterState(ctx.layout.updaterState, { ...readUpdaterState(ctx.layout.updaterState), nextCheckAt: nextAt(delayMs) });
  } catch {
    // status only loses the next-check time
  }
}
