/**
 * Lifecycle of the app-server: start, stop, restart, version. Each returns a
 * result value and prints nothing; src/cli.ts renders it.
 */
import { closeSync, fstatSync, readSync, rmSync } from "node:fs";
import { openStateFile, readStateFile, STATE_READ_FLAGS } from "../platform/fs.ts";
import { BerthError, errnoCode } from "../errors.ts";
import { warn } from "../diagnostics.ts";
import { probeInitialize, type ProbeResult } from "../server/client.ts";
import type { InitializeResult } from "../server/protocol.ts";
import { CLI_VERSION } from "../version.ts";
import { ExitedAtLaunch, PidBackend, waitUntil, type LaunchSpec, type StopOutcome } from "./backend.ts";
import { unixSocketPeer } from "../platform/ffi.ts";
import { processState } from "../platform/process.ts";
import { adoptProven } from "./adoption.ts";
import { assertManagedBinary, checkExistingStateDirs, managedInstall, sameHome, settingsOrDefaults, prepareStateDirs, settingsOf, type Context } from "./context.ts";
import { DAEMON_LOCK_WAIT_MS, withLock } from "./lock.ts";
import type { PidRecord } from "./pidfile.ts";
import type { ReadyOutcome, ReadyWait } from "./ready.ts";
import type { Settings } from "./settings.ts";
import { ensureKeeper } from "./updater.ts";
import { writeWanted } from "./wanted.ts";

/** One readiness probe may take this long before we try again. */
const READY_PROBE_TIMEOUT_MS = 1_000;
const READY_POLL_MS = 10;
/**
 * With a readiness pipe the starter probes only once notified; these bound the
 * back-off of the fallback probes for a server that never writes to the pipe
 * (a release older than the notification).
 */
const READY_FALLBACK_FIRST_MS = 200;
const READY_FALLBACK_MAX_MS = 1_000;
/** `version` waits this long for an answer. */
export const VERSION_PROBE_TIMEOUT_MS = 3_000;
/** A server that failed readiness gets this long to exit on SIGTERM before SIGKILL. */
const FAILED_START_GRACE_MS = 2_000;
const LOG_TAIL_BYTES = 2_048;

export type LifecycleStatus = "started" | "alreadyRunning" | "stopped" | "notRunning" | "restarted" | "running";

export type LifecycleResult = {
  /** `stop` only: descendants of the server that outlived it and could not be ended. */
  notEnded?: { pid: number; reason: string }[];
  status: LifecycleStatus;
  backend: "pid" | null;
  pid?: number;
  managedBinaryPath: string;
  managedVersion: string | null;
  socketPath: string;
  cliVersion: string;
  appServerVersion?: string;
  /** stop/restart: how many session processes the app-server ended on its way out. */
  processesEnded?: number;
};

export function appServerBackend(ctx: Context): PidBackend {
  return new PidBackend({ pidPath: ctx.layout.appServerPid, trackGroup: false });
}

function result(ctx: Context, status: LifecycleStatus, running?: { pid?: number; managed: boolean; info?: InitializeResult }): LifecycleResult {
  return {
    status,
    backend: running?.managed ? "pid" : null,
    ...(running?.pid !== undefined ? { pid: running.pid } : {}),
    managedBinaryPath: ctx.layout.managedBinary,
    managedVersion: managedInstall(ctx).version,
    socketPath: ctx.socket.path,
    cliVersion: CLI_VERSION,
    ...(running?.info ? { appServerVersion: running.info.serverInfo.version } : {}),
  };
}

/** The last lines of a log, for error messages. */
export function logTail(path: string, maxBytes = LOG_TAIL_BYTES): string {
  try {
    const fd = openStateFile(path, STATE_READ_FLAGS);
    try {
      const size = fstatSync(fd).size;
      const length = Math.min(size, maxBytes);
      const buffer = Buffer.alloc(length);
      readSync(fd, buffer, 0, length, size - length);
      const text = buffer.toString("utf8").trimEnd();
      return text === "" ? "(log is empty)" : text;
    } finally {
      closeSync(fd);
    }
  } catch {
    return "(no log)";
  }
}

/** A berth app-server of this BERTH_HOME that answers, with the pid it claims. */
function isOurServer(ctx: Context, probe: ProbeResult): probe is { kind: "berth"; info: InitializeResult } {
  return probe.kind === "berth" && sameHome(probe.info.berthHome, ctx.layout.home);
}

function foreignServerError(ctx: Context, probe: ProbeResult): BerthError {
  const detail = probe.kind === "berth" ? `a berth app-server of ${probe.info.berthHome} (pid ${probe.info.pid})` : "something that is not a berth app-server";
  return new BerthError(
    "NOT_MANAGED",
    `${detail} answers on ${ctx.socket.path}, and no berth record of ${ctx.layout.home} owns it; nothing was touched. Stop it yourself, or remove the socket if it is stale.`,
  );
}

export function appServerArgs(ctx: Context, settings: Settings): string[] {
  return ["serve", "--listen", `unix://${ctx.socket.path}`, ...(settings.remoteControlEnabled ? ["--remote-control"] : [])];
}

/** Resolves with the notification's outcome, or "later" after `ms`. */
async function notifiedWithin(ready: ReadyWait, ms: number): Promise<ReadyOutcome | "later"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const later = new Promise<"later">((resolve) => (timer = setTimeout(() => resolve("later"), ms)));
  try {
    return await Promise.race([ready.outcome, later]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits for our pid to answer `initialize`; on failure leaves nothing running
 * and reports NOT_READY. Given the launch's readiness pipe, it sleeps on the
 * pipe and probes once notified (or, for a server that never notifies, after a
 * backing-off fallback delay); without one, or once the pipe has ended, it
 * polls every READY_POLL_MS. `fresh`: we just launched it (a server that already
 * ran and is only slow is never stopped here).
 */
async function awaitReady(ctx: Context, backend: PidBackend, record: PidRecord, settings: Settings, ready?: ReadyWait, fresh = true): Promise<InitializeResult> {
  const deadline = Date.now() + settings.startTimeoutMs;
  let pending = ready;
  let fallbackMs = READY_FALLBACK_FIRST_MS;
  let exited = false;
  try {
    while (Date.now() < deadline) {
      if (!backend.isAlive(record)) {
        exited = true;
        break;
      }
      if (pending) {
        const outcome = await notifiedWithin(pending, Math.min(fallbackMs, Math.max(1, deadline - Date.now())));
        if (outcome === "later") fallbackMs = Math.min(fallbackMs * 2, READY_FALLBACK_MAX_MS);
        else pending = undefined;
        if (!backend.isAlive(record)) continue;
      }
      const probe = await probeInitialize(ctx.socket.path, Math.min(READY_PROBE_TIMEOUT_MS, Math.max(1, deadline - Date.now())));
      if (probe.kind === "berth" && probe.info.pid === record.pid) return probe.info;
      if (!pending) await Bun.sleep(READY_POLL_MS);
    }
  } finally {
    ready?.cancel();
  }
  // A server we just launched and that never answered is ours to clean up; one that
  // already ran (stopped with SIGSTOP, or just slow) is slow, not broken: leave it.
  if (!exited && !fresh) throw slowServer(ctx, record);
  if (!exited) await backend.stop(record, FAILED_START_GRACE_MS);
  else backend.pidFile.removeIfHolds(record);
  throw notReady(ctx, exited ? `exited before answering initialize` : `did not answer initialize within ${settings.startTimeoutMs} ms and was stopped`);
}

/** NOT_READY for a recorded, running server that does not answer: never stopped for being slow. */
function slowServer(ctx: Context, record: PidRecord): BerthError {
  const state = processState(record.pid);
  return new BerthError(
    "NOT_READY",
    `the recorded app-server pid ${record.pid} runs${state === "T" || state === "t" ? " but is stopped (SIGSTOP; resume it with `kill -CONT " + record.pid + "`)" : ""} and did not answer on ${ctx.socket.path} in time; berth left it running. Retry, or \`berth restart\` it.`,
  );
}

function notReady(ctx: Context, what: string): BerthError {
  const install = managedInstall(ctx);
  return new BerthError(
    "NOT_READY",
    `the app-server ${install.binaryPath} (version ${install.version ?? "unknown"}) ${what}. Last lines of ${ctx.layout.appServerLog}:\n${logTail(ctx.layout.appServerLog)}`,
  );
}

type Running = { pid?: number; managed: boolean; info?: InitializeResult };

/** Under daemon.lock: make sure our app-server runs and answers. */
async function ensureRunning(ctx: Context, settings: Settings, onExit?: LaunchSpec["onExit"]): Promise<{ started: boolean; running: Running }> {
  const backend = appServerBackend(ctx);
  const state = await backend.pidFile.waitWhileStarting(settings.startTimeoutMs + 5_000);
  if (state.kind === "running") {
    const info = await awaitReady(ctx, backend, state.record, settings, undefined, false);
    return { started: false, running: { pid: state.record.pid, managed: true, info } };
  }
  const probe = await probeInitialize(ctx.socket.path, READY_PROBE_TIMEOUT_MS);
  if (isOurServer(ctx, probe)) {
    const record = await adoptProven(ctx, backend, probe.info.pid);
    if (record) {
      warn(`adopted the running app-server pid ${record.pid}: its record was missing.`);
      return { started: false, running: { pid: record.pid, managed: true, info: probe.info } };
    }
  }
  if (probe.kind !== "absent") {
    return { started: false, running: { managed: false, ...(probe.kind === "berth" ? { pid: probe.info.pid, info: probe.info } : {}) } };
  }
  removeLeftoverSocket(ctx);
  let launched;
  try {
    launched = await backend.launch({
      binary: ctx.layout.managedBinary,
      args: appServerArgs(ctx, settings),
      cwd: ctx.layout.home,
      env: { ...ctx.env, BERTH_HOME: ctx.layout.home },
      logPath: ctx.layout.appServerLog,
      notifyReady: true,
      ...(onExit ? { onExit } : {}),
    });
  } catch (error) {
    if (error instanceof ExitedAtLaunch) throw notReady(ctx, "exited at once after launch");
    throw error;
  }
  const info = await awaitReady(ctx, backend, launched.record, settings, launched.ready);
  return { started: launched.kind === "started", running: { pid: launched.record.pid, managed: true, info } };
}

function removeLeftoverSocket(ctx: Context): void {
  try {
    rmSync(ctx.socket.path, { force: false });
    warn(`removed the leftover socket ${ctx.socket.path}: nothing answered on it.`);
  } catch {
    // nothing there
  }
}

export type StopReport = StopOutcome & { processesEnded: number };

/**
 * How many session processes the app-server with this pid ended: it writes
 * daemon/app-server.shutdown.json just before it exits (src/server/run.ts).
 * A server killed before it could write it reports 0.
 */
export function readProcessesEnded(ctx: Context, pid: number): number {
  try {
    const report = JSON.parse(readStateFile(ctx.layout.appServerShutdown) ?? "{}") as { pid?: unknown; processesEnded?: unknown };
    return report.pid === pid && typeof report.processesEnded === "number" ? report.processesEnded : 0;
  } catch {
    return 0;
  }
}

async function stopRecorded(ctx: Context, backend: PidBackend, record: PidRecord, settings: Settings): Promise<StopReport> {
  try {
    rmSync(ctx.layout.appServerShutdown, { force: true });
  } catch (error) {
    // A read-only BERTH_HOME must not keep the server running; the report is matched by pid anyway.
    if (errnoCode(error) !== "EROFS") throw error;
  }
  const outcome = await backend.stopTree(record, settings.stopGraceMs);
  return { ...outcome, processesEnded: outcome.status === "stopped" ? readProcessesEnded(ctx, record.pid) : 0 };
}

/** Under daemon.lock: stop our app-server; NOT_MANAGED when a stranger answers. */
async function ensureStopped(ctx: Context, settings: Settings): Promise<"stopped" | "notRunning"> {
  return (await ensureStoppedTree(ctx, settings)).status;
}

/**
 * ensureStopped, also saying which of the server's descendants could not be
 * ended and how many session processes the server ended on its way out.
 */
async function ensureStoppedTree(ctx: Context, settings: Settings): Promise<StopReport> {
  const backend = appServerBackend(ctx);
  const state = await backend.pidFile.waitWhileStarting(settings.startTimeoutMs + 5_000);
  if (state.kind === "running") return stopRecorded(ctx, backend, state.record, settings);
  const probe = await probeInitialize(ctx.socket.path, READY_PROBE_TIMEOUT_MS);
  if (isOurServer(ctx, probe)) {
    const record = await adoptProven(ctx, backend, probe.info.pid);
    if (record) return stopRecorded(ctx, backend, record, settings);
  }
  if (probe.kind !== "absent") throw foreignServerError(ctx, probe);
  removeLeftoverSocket(ctx);
  return { status: "notRunning", notEnded: [], processesEnded: 0 };
}

/** Preflight shared by every mutating command, then the action under daemon.lock. */
export async function underDaemonLock<T>(ctx: Context, action: (settings: Settings) => Promise<T>, needsBinary = true): Promise<T> {
  if (needsBinary) assertManagedBinary(ctx);
  prepareStateDirs(ctx);
  const settings = settingsOf(ctx);
  return withLock(ctx.layout.daemonLock, DAEMON_LOCK_WAIT_MS, () => action(settingsOf(ctx) ?? settings));
}

export async function startAppServer(ctx: Context): Promise<LifecycleResult> {
  return underDaemonLock(ctx, async (settings) => {
    const { started, running } = await ensureRunning(ctx, settings);
    // Under the lock, so the keeper (which acts only under it) never sees the old intent with the new process.
    writeWanted(ctx, "running");
    await ensureKeeper(ctx);
    return result(ctx, started ? "started" : "alreadyRunning", running);
  });
}

/** Defaults stand in for a corrupt settings.json (see settingsOrDefaults). */
export async function stopAppServer(ctx: Context): Promise<LifecycleResult> {
  prepareStateDirs(ctx);
  return withLock(ctx.layout.daemonLock, DAEMON_LOCK_WAIT_MS, async () => {
    const outcome = await ensureStoppedTree(ctx, settingsOrDefaults(ctx));
    try {
      writeWanted(ctx, "stopped");
    } catch (error) {
      // The server is stopped; a read-only BERTH_HOME only loses the wish, which the keeper then cannot act on anyway.
      if (errnoCode(error) !== "EROFS") throw error;
      warn(`could not record the wanted state in ${ctx.layout.daemonDir}: the file system is read-only.`);
    }
    return {
      ...result(ctx, outcome.status),
      processesEnded: outcome.processesEnded,
      ...(outcome.notEnded.length > 0 ? { notEnded: outcome.notEnded } : {}),
    };
  });
}


/** Stop (if running) then start, on the managed binary, in one hold of daemon.lock. */
export async function restartAppServer(ctx: Context): Promise<LifecycleResult> {
  return underDaemonLock(ctx, async (settings) => {
    const report = await ensureStoppedTree(ctx, settings);
    const { running } = await ensureRunning(ctx, settings);
    writeWanted(ctx, "running");
    await ensureKeeper(ctx);
    return { ...result(ctx, "restarted", running), processesEnded: report.processesEnded };
  });
}

/** Restarts only if an app-server of ours is running (settings changed); reports what it did. */
export async function restartIfRunning(ctx: Context, settings: Settings): Promise<Running | undefined> {
  const backend = appServerBackend(ctx);
  const state = await backend.pidFile.waitWhileStarting(settings.startTimeoutMs + 5_000);
  const probe = state.kind === "running" ? undefined : await probeInitialize(ctx.socket.path, READY_PROBE_TIMEOUT_MS);
  if (probe && probe.kind !== "absent" && !isOurServer(ctx, probe)) throw foreignServerError(ctx, probe);
  if (state.kind !== "running" && !(probe && isOurServer(ctx, probe))) return undefined;
  await ensureStopped(ctx, settings);
  return (await ensureRunning(ctx, settings)).running;
}

export { ensureRunning, ensureStopped, ensureStoppedTree, isOurServer, foreignServerError };

/** No lock: asks the running app-server who it is. */
export async function appServerVersion(ctx: Context): Promise<LifecycleResult> {
  checkExistingStateDirs(ctx);
  const probe = await probeInitialize(ctx.socket.path, VERSION_PROBE_TIMEOUT_MS);
  if (probe.kind === "absent") {
    throw new BerthError("NOT_RUNNING", `no app-server answers on ${ctx.socket.path}; start it with \`berth start\`.`);
  }
  if (!isOurServer(ctx, probe)) {
    // Something accepts but does not answer: if it is our recorded server (the kernel says so), it is slow, not foreign.
    const recorded = appServerBackend(ctx).inspect();
    if (probe.kind === "foreign" && recorded.kind === "running" && unixSocketPeer(ctx.socket.path)?.pid === recorded.record.pid) {
      throw slowServer(ctx, recorded.record);
    }
    throw foreignServerError(ctx, probe);
  }
  const state = appServerBackend(ctx).pidFile.readContent();
  const managed = state.kind === "record" && state.record.pid === probe.info.pid;
  return result(ctx, "running", { pid: probe.info.pid, managed, info: probe.info });
}

export async function waitForExit(pid: number, identity: string, timeoutMs: number): Promise<boolean> {
  const { processIdentity } = await import("../platform/process.ts");
  return waitUntil(() => processIdentity(pid) !== identity, timeoutMs);
}
