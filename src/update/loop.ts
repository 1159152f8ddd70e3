/**
 * `berth update-loop`: the detached updater and keeper. It sets up (records
 * its version, schedules the first check, takes the keeper's first look) and
 * then, on Linux, replaces itself with the small POSIX-sh loop of
 * keeper-sh.ts, which stays resident and runs the current managed binary for
 * each step: `keeper-step` (the keeper's look and restart, keeper-loop.ts) on
 * an event, `update-step` (one check: install, roll out with a health check,
 * roll back) when one is due. Elsewhere (no /proc to read identities from a
 * shell) the same steps run in this process.
 */
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { describeError, isBerthError } from "../errors.ts";
import { managedInstall, openContext, settingsOf, type Context } from "../daemon/context.ts";
import { defaultSettings, type Settings } from "../daemon/settings.ts";
import { appendLog, captureStdio, logLimitsOf, stdoutIsLog } from "../daemon/log.ts";
import { changeUpdaterState, readUpdaterState, type UpdaterState } from "../daemon/updater.ts";
import { execReplace } from "../platform/ffi.ts";
import { writeFileAtomic, readStateFile } from "../platform/fs.ts";
import { processIdentity } from "../platform/process.ts";
import { UPDATE_LOOP_ARGV } from "../serve-entry.ts";
import { CLI_VERSION } from "../version.ts";
import { Keeper, type KeeperVerdict } from "./keeper-loop.ts";
import { keeperShellArgv, keeperShellEnv, keeperStepMaxMs, keeperVerdictPath, SHELL, updateVerdictLine, updateVerdictPath, verdictLine, watchedLine, type LoopStart } from "./keeper-sh.ts";
import { exitOnTermination } from "./termination.ts";

/**
 * The updater proper (installer, downloads, signatures) is loaded only by a
 * step whose check is due: a keeper with auto-update off never loads it.
 */
const updater = () => import("./update.ts");

/** While a restart waits for daemon.lock (or for session processes), try again this often. */
export const BUSY_RETRY_MS = 1_000;
const FALLBACK_INTERVAL_MS = 3_600_000;
/** The in-process loop (no sh loop) looks at the record this often, like the sh loop's tick. */
const IN_PROCESS_TICK_MS = 500;
/** What the sh loop runs besides berth: `sleep` each tick, `find` before each launch. */
const SHELL_LOOP_PROGRAMS = ["sleep", "find"] as const;
/** Set by tests to keep the loop in Bun (the in-process driver) where the sh loop would run. */
const IN_PROCESS_ENV = "BERTH_KEEPER_IN_PROCESS";

function logLine(ctx: Context, line: string): void {
  try {
    appendLog(ctx.layout.updaterLog, line, logLimitsOf(ctx));
  } catch {
    // a full disk must not end the keeper
  }
}

function updateState(ctx: Context, change: (state: UpdaterState) => UpdaterState): void {
  try {
    changeUpdaterState(ctx.layout.updaterState, change);
  } catch {
    // status only loses what this would have told
  }
}

/** The version the loop compares steps against: the managed release's (its folder), else this binary's. */
function managedVersion(ctx: Context): string {
  try {
    return managedInstall(ctx).version ?? CLI_VERSION;
  } catch {
    return CLI_VERSION;
  }
}

/**
 * The settings the loop starts with. A corrupt settings.json must not end the
 * keeper: the loop re-executes itself from every new release, maybe long after
 * a typo. It says so in its log and keeps the app-server, with auto-update off
 * (the user's choice is unknown); each check reads the file anew, and a
 * restart of the app-server needs it readable.
 */
function startSettings(ctx: Context): Settings {
  try {
    return settingsOf(ctx);
  } catch (error) {
    if (!isBerthError(error, "STATE_CORRUPT")) throw error;
    logLine(ctx, `${describeError(error)} Until it reads again: keeping the app-server only, no updates.`);
    return { ...defaultSettings(), autoUpdate: false };
  }
}

export async function runUpdateLoop(): Promise<never> {
  const ctx = openContext();
  exitOnTermination();
  if (stdoutIsLog(ctx.layout.updaterLog)) captureStdio(ctx.layout.updaterLog, () => logLimitsOf(ctx));
  const settings = startSettings(ctx);
  const version = managedVersion(ctx);
  const firstRunAt = new Date(Date.now() + settings.update.initialDelayMs).toISOString();
  // A rollout deferred by the loop this one replaces is retried at once, while it is still for the release installed now.
  const resumed = readUpdaterState(ctx.layout.updaterState).pendingRollout;
  const pendingRollout = resumed?.version === version ? resumed : undefined;
  const updateInMs = pendingRollout ? 0 : settings.update.initialDelayMs;
  // Which binary exec'd the loop (status.updater.version) and when the first check runs.
  updateState(ctx, ({ pendingRollout: _stale, nextCheckAt: _old, ...state }) => ({
    ...state,
    loop: { pid: process.pid, version: CLI_VERSION },
    nextRunAt: new Date(Date.now() + updateInMs).toISOString(),
    ...(pendingRollout ? { pendingRollout } : {}),
    ...(settings.autoUpdate ? { nextCheckAt: firstRunAt } : {}),
  }));
  logLine(ctx, `updater pid ${process.pid} (berth ${CLI_VERSION}) started; ${settings.autoUpdate ? `first check in ${settings.update.initialDelayMs} ms` : "auto-update is off: keeping the app-server only"}`);
  if (shellLoopRuns(ctx)) {
    try {
      const own = realpathSync(ctx.layout.managedBinary);
      execReplace(SHELL, keeperShellArgv(own, version, await firstStep(ctx, updateInMs), keeperStepMaxMs(settings.startTimeoutMs), process.getuid?.() ?? 0), keeperShellEnv({ ...ctx.env, BERTH_HOME: ctx.layout.home }));
    } catch (error) {
      logLine(ctx, `loop: cannot run the sh loop (${describeError(error).split("\n")[0]}); keeping in this process`);
    }
  }
  return runInProcess(ctx);
}

/** The sh loop needs /proc (identities), the shell, and the two programs it runs besides berth. */
function shellLoopRuns(ctx: Context): boolean {
  if (process.platform !== "linux" || ctx.env[IN_PROCESS_ENV] || !existsSync(SHELL) || !existsSync("/proc/self/stat")) return false;
  const path = ctx.env.PATH ?? "/usr/bin:/bin";
  return SHELL_LOOP_PROGRAMS.every((program) => Bun.which(program, { PATH: path }) !== null);
}

/**
 * The keeper's first look, done here before the exec (this process has the
 * code loaded already), so the sh loop starts watching without a step of its own.
 */
async function firstStep(ctx: Context, updateInMs: number): Promise<LoopStart> {
  const seen = watchedLine(readStateFile(ctx.layout.appServerPid), readStateFile(ctx.layout.wantedFile));
  const now = uptimeCs();
  try {
    const verdict = await keeperStep(ctx);
    return { seen, ...(verdict.watch ? { watch: verdict.watch } : {}), wakeAtCs: wakeAtCs(now, verdict.wakeInMs), updateAtCs: wakeAtCs(now, updateInMs) };
  } catch (error) {
    logLine(ctx, `keeper: ${describeError(error).split("\n")[0]}`);
    // "-" is never a pidfile line: the loop's first tick runs a step.
    return { seen: "-", wakeAtCs: now, updateAtCs: wakeAtCs(now, updateInMs) };
  }
}

/** Pure: uptime (centiseconds, /proc/uptime's clock) at which the loop must call the next step. */
export function wakeAtCs(uptimeCs: number, wakeInMs: number): number {
  const capped = Number.isFinite(wakeInMs) ? Math.max(0, wakeInMs) : FALLBACK_INTERVAL_MS;
  return uptimeCs + Math.ceil(capped / 10);
}

/** /proc/uptime's clock, which the sh loop reads too (0 where there is none: the in-process loop ignores it). */
function uptimeCs(): number {
  try {
    return Math.floor(Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]) * 100) || 0;
  } catch {
    return 0;
  }
}

/** Environment the sh loop sets for a step only; never passed on to an app-server a step launches. */
const STEP_ENV = ["BERTH_KEEPER_TOKEN", "BERTH_KEEPER_FALLBACK"] as const;

/**
 * A step's context: what the loop told it, taken out of the environment it
 * hands on. It first tells the loop it started (berth's code runs), which
 * lengthens its deadline there from seconds to minutes.
 */
function openStepContext(verdictPathOf: (daemonDir: string) => string): { ctx: Context; token: string; fallback?: string } {
  const token = process.env.BERTH_KEEPER_TOKEN ?? "-";
  const fallback = process.env.BERTH_KEEPER_FALLBACK;
  for (const name of STEP_ENV) delete process.env[name];
  const ctx = openContext();
  exitOnTermination();
  // The loop points a step's stderr at the keeper's log (its stdout at /dev/null): what the step says there, a
  // warning or the error it fails with, is stamped like every line of that log.
  if (stdoutIsLog(ctx.layout.updaterLog, 2)) captureStdio(ctx.layout.updaterLog, () => logLimitsOf(ctx), undefined, [2]);
  writeFileAtomic(verdictPathOf(ctx.layout.daemonDir), `${token} started\n`);
  if (fallback) logLine(ctx, `loop: ${fallback}; this step runs berth ${CLI_VERSION} instead`);
  return { ctx, token, ...(fallback ? { fallback } : {}) };
}

/** The version a step reports to the loop: a fallback step must never make it re-execute (from a broken current). */
function reportedVersion(ctx: Context, fallback: string | undefined): string {
  return fallback ? "fallback" : managedVersion(ctx);
}

/** `berth keeper-step` (run by the sh loop): the keeper's look; leaves what to watch next in daemon/keeper-next. */
export async function runKeeperStep(): Promise<object> {
  const { ctx, token, fallback } = openStepContext(keeperVerdictPath);
  const verdict = await keeperStep(ctx);
  const line = verdictLine({ token, watch: verdict.watch, wakeAtCs: wakeAtCs(uptimeCs(), verdict.wakeInMs), version: reportedVersion(ctx, fallback) });
  writeFileAtomic(keeperVerdictPath(ctx.layout.daemonDir), line);
  return { status: "kept", watch: verdict.watch?.pid ?? null };
}

/** `berth update-step` (run by the sh loop in the background): a check when due; leaves when the next is due in daemon/update-next. */
export async function runUpdateStep(): Promise<object> {
  const { ctx, token, fallback } = openStepContext(updateVerdictPath);
  const { delayMs } = await updateStep(ctx);
  writeFileAtomic(updateVerdictPath(ctx.layout.daemonDir), updateVerdictLine({ token, wakeAtCs: wakeAtCs(uptimeCs(), delayMs), version: reportedVersion(ctx, fallback) }));
  return { status: "checked" };
}

function keeperStep(ctx: Context): Promise<KeeperVerdict> {
  return new Keeper(ctx, (line) => logLine(ctx, line)).step();
}

/**
 * One update check if it is due (state in updater-state.json): ms until the
 * next, and whether it restarted the app-server onto a new release.
 */
async function updateStep(ctx: Context): Promise<{ delayMs: number; restartedOnNew: boolean }> {
  const saved = readUpdaterState(ctx.layout.updaterState);
  const dueInMs = updateDueInMs(Date.parse(saved.nextRunAt ?? ""), Date.now(), longestPlanMs(ctx));
  if (dueInMs > 0) return { delayMs: dueInMs, restartedOnNew: false };
  let pending = saved.pendingRollout;
  let restartedOnNew = false;
  let delayMs = FALLBACK_INTERVAL_MS;
  let recordNext = false;
  try {
    const settings = settingsOf(ctx);
    delayMs = settings.update.intervalMs;
    recordNext = settings.autoUpdate;
    if (!settings.autoUpdate && !pending) {
      // Keeper only: look again later in case auto-update is turned on.
    } else if (pending) {
      const { recordCheck, tryRollout } = await updater();
      const rollout = await tryRollout(ctx, pending, "try");
      if (rollout) {
        logLine(ctx, `check: ${rollout.status}: ${rollout.message}`);
        recordCheck(ctx, { at: new Date().toISOString(), outcome: rollout.status, message: rollout.message, latestVersion: pending.version });
        restartedOnNew = rollout.status === "updated" && rollout.restarted;
        pending = undefined;
      } else {
        delayMs = BUSY_RETRY_MS;
        recordNext = false;
      }
    } else {
      const { checkOutcome, recordCheck, updateWithRollout } = await updater();
      const outcome = await updateWithRollout(ctx, settings, {}, "try");
      pending = outcome.pending;
      if (pending) delayMs = BUSY_RETRY_MS;
      restartedOnNew = outcome.status === "updated" && outcome.restarted;
      logLine(ctx, `check: ${outcome.status}: ${outcome.message}`);
      recordCheck(ctx, { at: new Date().toISOString(), outcome: checkOutcome(outcome.status), message: outcome.message, latestVersion: outcome.latestVersion }, nextAt(delayMs));
      recordNext = false;
    }
  } catch (error) {
    const message = describeError(error).split("\n")[0] ?? "unknown error";
    const code = isBerthError(error) ? error.code : "INTERNAL";
    logLine(ctx, `check: failed: ${code}: ${message}`);
    try {
      (await updater()).recordCheck(ctx, { at: new Date().toISOString(), outcome: "failed", message, code }, nextAt(delayMs));
    } catch {
      // status only loses this check
    }
    recordNext = false;
  }
  updateState(ctx, ({ pendingRollout: _old, ...state }) => ({
    ...state,
    nextRunAt: nextAt(delayMs),
    ...(pending ? { pendingRollout: pending } : {}),
    ...(recordNext ? { nextCheckAt: nextAt(delayMs) } : {}),
  }));
  return { delayMs, restartedOnNew };
}

/** The longest wait the loop plans between checks: its first delay or its interval (the fallback's when settings do not read). */
function longestPlanMs(ctx: Context): number {
  try {
    const { update } = settingsOf(ctx);
    return Math.max(update.initialDelayMs, update.intervalMs);
  } catch {
    return FALLBACK_INTERVAL_MS;
  }
}

/**
 * Pure: ms until the planned check at `dueAt` (epoch ms; NaN when none is planned: due now). A plan further
 * ahead than any the loop makes was made before the wall clock was set back (NTP at boot, a user): due now,
 * rather than no check for as long as the clock jumped.
 */
export function updateDueInMs(dueAt: number, now: number, longestPlanMs: number): number {
  if (!(dueAt > now) || dueAt - now > longestPlanMs) return 0;
  return dueAt - now;
}

function nextAt(delayMs: number): string {
  return new Date(Date.now() + delayMs).toISOString();
}

/**
 * Where no sh loop runs: the same steps in this process, as two loops like
 * the sh loop's: the keeper woken by its events (the record changed, the
 * watched server gone, its deadline), the updater by its deadline; after a
 * validated restart onto a new release, re-executes from it.
 */
async function runInProcess(ctx: Context): Promise<never> {
  void keepInProcess(ctx);
  for (;;) {
    let next = { delayMs: BUSY_RETRY_MS, restartedOnNew: false };
    try {
      next = await updateStep(ctx);
    } catch (error) {
      logLine(ctx, `loop: update step failed: ${describeError(error).split("\n")[0]}`);
    }
    if (next.restartedOnNew) {
      logLine(ctx, `re-executing from ${ctx.layout.managedBinary}`);
      try {
        execReplace(ctx.layout.managedBinary, [ctx.layout.managedBinary, ...UPDATE_LOOP_ARGV], { ...ctx.env, BERTH_HOME: ctx.layout.home });
      } catch (error) {
        logLine(ctx, `re-exec failed, carrying on with this binary: ${describeError(error)}`);
      }
    }
    await Bun.sleep(next.delayMs);
  }
}

async function keepInProcess(ctx: Context): Promise<never> {
  for (;;) {
    let verdict: KeeperVerdict = { wakeInMs: BUSY_RETRY_MS };
    const record = readStateFile(ctx.layout.appServerPid);
    try {
      verdict = await keeperStep(ctx);
    } catch (error) {
      logLine(ctx, `keeper: step failed: ${describeError(error).split("\n")[0]}`);
    }
    const watch = verdict.watch;
    await untilKeeperEvent(Number.isFinite(verdict.wakeInMs) ? verdict.wakeInMs : FALLBACK_INTERVAL_MS, () => {
      if (readStateFile(ctx.layout.appServerPid) !== record) return true;
      return watch !== undefined && processIdentity(watch.pid) !== watch.processStartTime;
    });
  }
}

/**
 * Until the in-process keeper's next step: `wakeInMs` from now, or sooner when `changed` (looked at every
 * IN_PROCESS_TICK_MS). Timed by the monotonic clock: a wall clock set back (NTP after a macOS sleep, a user)
 * stretched a crashed server's 1 s backoff by the whole jump, as the sh loop's uptime-based deadlines never did.
 */
export async function untilKeeperEvent(wakeInMs: number, changed: () => boolean): Promise<void> {
  const wakeAt = performance.now() + wakeInMs;
  while (performance.now() < wakeAt) {
    await Bun.sleep(Math.min(IN_PROCESS_TICK_MS, Math.max(1, wakeAt - performance.now())));
    if (changed()) return;
  }
}
