/**
 * One update: the same code path for `berth update` and every tick of the
 * loop. Read latest.json, download and verify, install with the code of
 * `berth install`, then roll the app-server onto it with a health check and
 * roll back (and quarantine the version) if it does not become ready.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { BerthError, describeError, isBerthError } from "../errors.ts";
import { ensureRunning, isOurServer, stopThenStart } from "../daemon/app-server.ts";
import { managedInstall, prepareStateDirs, settingsOf, type Context } from "../daemon/context.ts";
import { DAEMON_LOCK_WAIT_MS, FileLock, withLock } from "../daemon/lock.ts";
import { isVersion } from "../install/semver.ts";
import type { Settings } from "../daemon/settings.ts";
import { appendLog, logLimitsOf } from "../daemon/log.ts";
import { changeUpdaterState, readUpdaterState, replaceUpdater, updaterBackend, withQuarantined, type UpdaterCheck } from "../daemon/updater.ts";
import { flipCurrent, installRelease, withInstallLock } from "../install/release.ts";
import { processIdentity } from "../platform/process.ts";
import { probeInitialize } from "../server/client.ts";
import { CLI_TARGET, CLI_VERSION } from "../version.ts";
import { recordRollout } from "./crash-rollback.ts";
import { clearPendingRestart, restartWaitsForProcesses } from "./defer.ts";
import { planUpdate, rolloutBucket, shouldRestart } from "./decide.ts";
import { machineId } from "./machine-id.ts";
import { critical } from "./termination.ts";
import { downloadVerifiedAsset, fetchLatest, type Latest, type LatestValidators } from "./release.ts";

const PROBE_TIMEOUT_MS = 2_000;

export type UpdateStatus = "upToDate" | "updateAvailable" | "updated" | "rolledBack" | "quarantined" | "deferred" | "notInRollout";

export type UpdateResult = {
  status: UpdateStatus;
  previousVersion: string | null;
  latestVersion: string;
  managedVersion: string | null;
  restarted: boolean;
  appServerVersion?: string;
  message: string;
  cliVersion: string;
  /** A manual update that installed a release replaced the running loop with one from the new binary. */
  updater?: { pid: number; replaced: boolean };
};

/** A rollout that still needs daemon.lock to restart the app-server (the loop retries it). */
export type PendingRollout = { version: string; previousReleaseDir: string | null };

function releaseBaseUrl(settings: Settings): string {
  if (!settings.releaseBaseUrl) {
    throw new BerthError("UPDATE_FAILED", "no release base URL: set releaseBaseUrl in settings.json or BERTH_RELEASE_BASE_URL.");
  }
  return settings.releaseBaseUrl;
}

function quarantine(ctx: Context, version: string): void {
  changeUpdaterState(ctx.layout.updaterState, (state) => withQuarantined(state, version));
}

export function recordCheck(ctx: Context, check: UpdaterCheck, nextCheckAt?: string): void {
  changeUpdaterState(ctx.layout.updaterState, (state) => ({ ...state, lastCheck: check, ...(nextCheckAt ? { nextCheckAt } : {}) }));
}

/** Download folders of updates whose process is gone (killed mid-download). */
function cleanStaleDownloads(dir: string): void {
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const entry of entries) {
    const pid = Number(entry.split("-")[0]);
    if (pid !== process.pid && processIdentity(pid) === undefined) rmSync(join(dir, entry), { recursive: true, force: true });
  }
}

/** Downloads, verifies and installs `version`; returns the release that was current before. */
async function downloadAndInstall(ctx: Context, baseUrl: string, version: string): Promise<{ previousReleaseDir: string | null }> {
  if (!CLI_TARGET) throw new BerthError("UNSUPPORTED_PLATFORM", `no release target for ${process.platform}-${process.arch}.`);
  const downloads = join(ctx.layout.packagesDir, "downloads");
  mkdirSync(downloads, { recursive: true, mode: 0o700 });
  cleanStaleDownloads(downloads);
  const dir = join(downloads, `${process.pid}-${Date.now().toString(36)}`);
  mkdirSync(dir, { mode: 0o700 });
  try {
    const binary = join(dir, "berth");
    await downloadVerifiedAsset(baseUrl, version, CLI_TARGET, binary);
    const previousReleaseDir = managedInstall(ctx).releaseDir;
    await installRelease({ layout: ctx.layout, sourcePath: binary, version, target: CLI_TARGET, env: ctx.env });
    return { previousReleaseDir };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Under daemon.lock: restart onto the new binary if our app-server runs
 * another version; if it does not become ready, flip back, restart on the
 * previous release and quarantine the version.
 */
export async function rolloutUnderLock(ctx: Context, settings: Settings, pending: PendingRollout): Promise<{ status: "updated" | "rolledBack"; restarted: boolean; appServerVersion?: string; message: string }> {
  const probe = await probeInitialize(ctx.socket.path, PROBE_TIMEOUT_MS);
  const running = isOurServer(ctx, probe) ? { managed: true, version: probe.info.serverInfo.version } : undefined;
  if (!shouldRestart(running, pending.version)) {
    recordRollout(ctx, pending.version, pending.previousReleaseDir);
    return { status: "updated", restarted: false, ...(running ? { appServerVersion: running.version } : {}), message: `installed ${pending.version}` };
  }
  try {
    const { running: now } = await stopThenStart(ctx, settings);
    recordRollout(ctx, pending.version, pending.previousReleaseDir);
    return { status: "updated", restarted: true, appServerVersion: now.info?.serverInfo.version, message: `installed ${pending.version}; app-server restarted on it` };
  } catch (error) {
    if (!isBerthError(error, "NOT_READY") && !isBerthError(error, "START_FAILED")) throw error;
    quarantine(ctx, pending.version);
    const previous = pending.previousReleaseDir;
    if (!previous) throw error;
    // Flip back and restart as one: a SIGTERM here waits until the previous release runs again.
    const { running: back } = await critical(async () => {
      await withInstallLock(ctx.layout, () => flipCurrent(ctx.layout, previous));
      return ensureRunning(ctx, settings);
    });
    return {
      status: "rolledBack",
      restarted: true,
      appServerVersion: back.info?.serverInfo.version,
      message: `${pending.version} did not become ready (${describeError(error).split("\n")[0]}); rolled back to ${pending.previousReleaseDir} and quarantined ${pending.version}`,
    };
  }
}

/** `manual`: `berth update` by hand, which ignores a phased rollout (the loop honours it). */
export type UpdateOptions = { check?: boolean; release?: string; explicit?: boolean; manual?: boolean };

/** Pure: the cached validators of the state file, if they have the expected shape. */
export function validatorsOf(value: unknown): LatestValidators | undefined {
  const v = value as Partial<LatestValidators> | null | undefined;
  if (typeof v?.url !== "string" || typeof v.latest?.version !== "string") return undefined;
  if (v.etag !== undefined && typeof v.etag !== "string") return undefined;
  if (v.lastModified !== undefined && typeof v.lastModified !== "string") return undefined;
  if (v.latest.rolloutPercent !== undefined && typeof v.latest.rolloutPercent !== "number") return undefined;
  return v as LatestValidators;
}

/** latest.json, asked conditionally; a fresh verified answer's validators are kept for the next check. */
async function latestRelease(ctx: Context, baseUrl: string): Promise<Latest> {
  const cached = validatorsOf(readUpdaterState(ctx.layout.updaterState).latestValidators);
  const { latest, notModified, validators } = await fetchLatest(baseUrl, cached);
  if (!notModified) {
    changeUpdaterState(ctx.layout.updaterState, ({ latestValidators: _old, ...rest }) => (validators ? { ...rest, latestValidators: validators } : rest));
  }
  return latest;
}

/**
 * Everything before the restart: which version, download, verify, install.
 * Returns the result so far and, when something was installed, the rollout to do.
 */
export async function prepareUpdate(ctx: Context, settings: Settings, options: UpdateOptions): Promise<{ result: UpdateResult; pending?: PendingRollout }> {
  if (options.release !== undefined && !isVersion(options.release)) {
    throw new BerthError("USAGE", `--release must be a version like 1.4.0, got ${JSON.stringify(options.release)}.`);
  }
  const baseUrl = releaseBaseUrl(settings);
  // Leftovers of downloads killed earlier go on every run, not only when a new download starts.
  cleanStaleDownloads(join(ctx.layout.packagesDir, "downloads"));
  const before = managedInstall(ctx).version;
  const found: Latest = options.release ? { version: options.release } : await latestRelease(ctx, baseUrl);
  const latest = found.version;
  const bucket = found.rolloutPercent === undefined ? 0 : rolloutBucket(machineId(ctx.layout.daemonDir));
  const plan = planUpdate({
    installed: before,
    candidate: latest,
    explicit: Boolean(options.release),
    quarantined: readUpdaterState(ctx.layout.updaterState).quarantined,
    rollout: { bucket, ...(found.rolloutPercent === undefined ? {} : { percent: found.rolloutPercent }) },
    manual: Boolean(options.manual),
  });
  const base = { previousVersion: before, latestVersion: latest, managedVersion: before, restarted: false, cliVersion: CLI_VERSION };
  if (plan.action === "none") {
    const message =
      plan.reason === "quarantined"
        ? `${latest} is quarantined after a failed rollout; not retrying it`
        : plan.reason === "notInRollout"
          ? `${latest} is available but this machine (bucket ${bucket}) is not in its ${found.rolloutPercent} % rollout yet; \`berth update\` installs it now`
          : `${before} is up to date`;
    return { result: { ...base, status: plan.reason, message } };
  }
  if (options.check) return { result: { ...base, status: "updateAvailable", message: `${latest} is available (installed: ${before ?? "none"})` } };
  const { previousReleaseDir } = await downloadAndInstall(ctx, baseUrl, latest);
  return {
    result: { ...base, status: "updated", managedVersion: managedInstall(ctx).version, message: `installed ${latest}` },
    pending: { version: latest, previousReleaseDir },
  };
}

/**
 * `berth update`: downloads and installs without daemon.lock (the install lock
 * guards the install), then takes daemon.lock, waiting like every mutating
 * command, only to restart. Failures are recorded in status.lastCheck too.
 */
export async function updateNow(ctx: Context, options: UpdateOptions): Promise<UpdateResult> {
  prepareStateDirs(ctx);
  try {
    const outcome = await updateWithRollout(ctx, settingsOf(ctx), { ...options, manual: true }, "wait");
    recordCheck(ctx, { at: new Date().toISOString(), outcome: checkOutcome(outcome.status), message: outcome.message, latestVersion: outcome.latestVersion });
    appendLog(ctx.layout.updaterLog, `manual update (pid ${process.pid}): ${outcome.status}: ${outcome.message}`, logLimitsOf(ctx));
    // A running loop must not keep running the old binary: replace it from the new managed binary.
    if ((outcome.status === "updated" || outcome.status === "rolledBack") && updaterBackend(ctx).inspect().kind === "running") {
      const pid = await withLock(ctx.layout.daemonLock, DAEMON_LOCK_WAIT_MS, () => replaceUpdater(ctx));
      return { ...outcome, updater: { pid, replaced: true } };
    }
    return outcome;
  } catch (error) {
    if (!isBerthError(error, "USAGE")) {
      // As the loop records a failed check: its code in status, and one line in updater.log.
      const message = describeError(error).split("\n")[0] ?? "";
      const code = isBerthError(error) ? error.code : "INTERNAL";
      try {
        recordCheck(ctx, { at: new Date().toISOString(), outcome: "failed", message, code });
        appendLog(ctx.layout.updaterLog, `manual update (pid ${process.pid}): failed: ${code}: ${message}`, logLimitsOf(ctx));
      } catch {
        // Recording is best effort (a read-only BERTH_HOME); the error itself is what the user must see.
      }
    }
    throw error;
  }
}

/**
 * An update killed after flipping `current` leaves our app-server on the old
 * binary: when nothing new is to be installed but the server we run answers
 * with another version than the installed one, the restart is still owed.
 */
async function owedRestart(ctx: Context): Promise<PendingRollout | undefined> {
  const install = managedInstall(ctx);
  if (!install.version || !CLI_TARGET) return undefined;
  const probe = await probeInitialize(ctx.socket.path, PROBE_TIMEOUT_MS);
  if (!isOurServer(ctx, probe) || probe.info.serverInfo.version === install.version) return undefined;
  const runningDir = `${probe.info.serverInfo.version}-${CLI_TARGET}`;
  return { version: install.version, previousReleaseDir: existsSync(join(ctx.layout.releasesDir, runningDir)) ? runningDir : null };
}

/**
 * The update, with the restart done under daemon.lock: `wait` for `berth update`,
 * holds it, `try` for the loop, which never waits for it (busy → `deferred`).
 */
export async function updateWithRollout(ctx: Context, settings: Settings, options: UpdateOptions, lock: "wait" | "try"): Promise<UpdateResult & { pending?: PendingRollout }> {
  prepareStateDirs(ctx);
  const prepared = await prepareUpdate(ctx, settings, options);
  const { result } = prepared;
  const owed = prepared.pending || options.check || result.status !== "upToDate" ? undefined : await owedRestart(ctx);
  const pending = prepared.pending ?? owed;
  if (!pending) return result;
  const rollout = await tryRollout(ctx, pending, lock);
  if (!rollout) {
    const waiting = readUpdaterState(ctx.layout.updaterState).pendingRestart;
    const why = waiting?.version === pending.version ? `${waiting.runningProcesses} session process(es) run (since ${waiting.since})` : "daemon.lock is busy";
    return { ...result, status: "deferred", message: `installed ${pending.version}; restart deferred: ${why}`, pending };
  }
  if (owed && rollout.status === "updated") {
    return { ...result, ...rollout, status: "updated", message: `${pending.version} was installed but the app-server still ran another version; finished the restart onto it` };
  }
  return { ...result, ...rollout, managedVersion: managedInstall(ctx).version };
}

/**
 * Runs the rollout under daemon.lock: waited for (`wait`, manual update) or
 * taken only if free (`try`, the loop; undefined when busy).
 */
export async function tryRollout(ctx: Context, pending: PendingRollout, lock: "wait" | "try") {
  // The socket as recorded now: a loop that runs for weeks must not ask a folder it chose at its start, which
  // another user may hold since (socket-dir.ts), whether the app-server runs.
  prepareStateDirs(ctx);
  const settings = settingsOf(ctx);
  if (lock === "wait") {
    return withLock(ctx.layout.daemonLock, DAEMON_LOCK_WAIT_MS, async () => finishedRollout(ctx, await rolloutUnderLock(ctx, settingsOf(ctx), pending)));
  }
  // The loop holds the restart back while session processes run (a manual update does not).
  if (await restartWaitsForProcesses(ctx, settings, pending.version)) return undefined;
  const daemonLock = FileLock.tryAcquire(ctx.layout.daemonLock);
  if (!daemonLock) return undefined;
  try {
    return finishedRollout(ctx, await rolloutUnderLock(ctx, settings, pending));
  } finally {
    daemonLock.release();
  }
}

function finishedRollout<T>(ctx: Context, rollout: T): T {
  clearPendingRestart(ctx);
  return rollout;
}

export function checkOutcome(status: UpdateStatus): UpdaterCheck["outcome"] {
  switch (status) {
    case "upToDate":
      return "upToDate";
    case "updateAvailable":
      return "updateAvailable";
    case "updated":
      return "updated";
    case "rolledBack":
      return "rolledBack";
    case "quarantined":
      return "quarantined";
    case "deferred":
      return "deferred";
    case "notInRollout":
      return "notInRollout";
  }
}
