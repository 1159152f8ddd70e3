/**
 * Lifecycle of the app-server: start, stop, restart, version. Each returns a
 * result value and prints nothing; src/cli.ts renders it.
 */
import type { StagedWrite } from "../platform/fs.ts";
import { describeError, errnoCode, isBerthError } from "../errors.ts";
import { warn } from "../diagnostics.ts";
import { probeInitialize } from "../server/client.ts";
import { foreignServerError, isOurServer, READY_PROBE_TIMEOUT_MS, result, type LifecycleResult, type Running } from "./answer.ts";
import { appServerBackend, ExitedAtLaunch, waitUntil, type LaunchSpec } from "./backend.ts";
import { assertManagedBinary, prepareStateDirs, settingsOf, settingsOrDefaults, type Context } from "./context.ts";
import { DAEMON_LOCK_WAIT_MS, withLock } from "./lock.ts";
import type { PidRecord } from "./pidfile.ts";
import type { Settings } from "./settings.ts";
import { wantedChange, type WantedChange } from "./wanted.ts";
import { adoptRunning, ensureStopped, ensureStoppedTree, removeLeftoverSocket, type StopReport } from "./stop-server.ts";

export { appServerBackend } from "./backend.ts";
export { appServerVersion, foreignServerError, isOurServer, VERSION_PROBE_TIMEOUT_MS, type LifecycleResult, type LifecycleStatus } from "./answer.ts";


export function appServerArgs(ctx: Context, settings: Settings): string[] {
  return ["serve", "--listen", `unix://${ctx.socket.path}`, ...(settings.remoteControlEnabled ? ["--remote-control"] : [])];
}

/**
 * Under daemon.lock: make sure our app-server runs and answers. `meanwhile`:
 * work that needs the lock but not the server's answer (recording the wish to
 * run, ~0.5 ms with its fsync); on a fresh launch it runs while the server
 * starts up, otherwise once it answers. It runs exactly once when this
 * succeeds, at most once when it fails.
 */
async function ensureRunning(ctx: Context, settings: Settings, options: EnsureRunningOptions = {}): Promise<{ started: boolean; running: Running }> {
  try {
    const meanwhile = options.meanwhile ?? (() => {});
    const { started, running } = await ensureRunningOverlapped(ctx, settings, options.onExit, meanwhile, options.record);
    if (!started) meanwhile();
    return { started, running };
  } finally {
    options.record?.abandon();
  }
}

type EnsureRunningOptions = {
  onExit?: LaunchSpec["onExit"];
  meanwhile?: () => void;
  /** The new record's room, staged (stageAppServerRecord) by a caller that stopped the server first; used or dropped. */
  record?: StagedWrite;
};

/**
 * Room for the record of the app-server a stop-then-start will launch, taken before the stop: a full
 * disk fails the command while the running server is still untouched, not after it was stopped.
 */
function stageAppServerRecord(ctx: Context): StagedWrite {
  return appServerBackend(ctx).pidFile.stageRecord();
}

/** Under daemon.lock: ensureStopped, then ensureRunning, with the new record's room staged before the stop. */
export async function stopThenStart(ctx: Context, settings: Settings): Promise<{ started: boolean; running: Running }> {
  const record = stageAppServerRecord(ctx);
  try {
    await ensureStopped(ctx, settings);
  } catch (error) {
    record.abandon();
    throw error;
  }
  return ensureRunning(ctx, settings, { record });
}

async function ensureRunningOverlapped(
  ctx: Context,
  settings: Settings,
  onExit: LaunchSpec["onExit"],
  meanwhile: () => void,
  record: StagedWrite | undefined,
): Promise<{ started: boolean; running: Running }> {
  // Loaded where needed, not by every command that imports this module (`stop` never waits for
  // readiness); on a fresh launch, after the spawn, while the server starts up on another core.
  const readiness = () => import("./await-ready.ts");
  const backend = appServerBackend(ctx);
  const state = await backend.pidFile.waitWhileStarting(settings.startTimeoutMs + 5_000);
  if (state.kind === "running") {
    const info = await (await readiness()).awaitReady(ctx, backend, state.record, settings, undefined, false);
    return { started: false, running: { pid: state.record.pid, managed: true, info } };
  }
  const probe = await probeInitialize(ctx.socket.path, READY_PROBE_TIMEOUT_MS);
  if (isOurServer(ctx, probe)) {
    const record = await adoptRunning(ctx, backend, probe.info.pid);
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
      ...(record ? { record } : {}),
    });
  } catch (error) {
    if (error instanceof ExitedAtLaunch) throw (await readiness()).notReady(ctx, "exited at once after launch");
    throw error;
  }
  const { awaitReady } = await readiness();
  if (launched.kind !== "started") {
    const info = await awaitReady(ctx, backend, launched.record, settings, launched.ready);
    return { started: false, running: { pid: launched.record.pid, managed: true, info } };
  }
  const answer = awaitReady(ctx, backend, launched.record, settings, launched.ready);
  let failed: { error: unknown } | undefined;
  try {
    meanwhile();
  } catch (error) {
    failed = { error };
  }
  // The server's answer first, whatever happened meanwhile: it decides what is left running.
  const info = await answer;
  if (failed) throw failed.error;
  return { started: true, running: { pid: launched.record.pid, managed: true, info } };
}

/** Preflight shared by every mutating command, then the action under daemon.lock. */
export async function underDaemonLock<T>(ctx: Context, action: (settings: Settings) => Promise<T>, needsBinary = true): Promise<T> {
  if (needsBinary) assertManagedBinary(ctx);
  prepareStateDirs(ctx);
  const settings = settingsOf(ctx);
  return withLock(ctx.layout.daemonLock, DAEMON_LOCK_WAIT_MS, () => action(settingsOf(ctx) ?? settings));
}

/**
 * The keeper runs whenever the app-server is wanted (spec "Supervision"). It is
 * launched after the server answers and not waited for; failing to launch it
 * does not fail a start whose server runs: a warning, and `status` shows it stopped.
 */
async function keeperAfterStart(ctx: Context, searched?: Promise<readonly PidRecord[] | undefined>): Promise<void> {
  try {
    await (await import("./updater.ts")).ensureKeeper(ctx, await searched);
  } catch (error) {
    warn(`the app-server runs, but its keeper (which restarts it after a crash) could not be launched: ${describeError(error)} Run \`berth start\` again to retry.`);
  }
}

/**
 * ensureRunning that records the wish to run (while a fresh server starts up), and takes it back if the start
 * fails. The wish is staged first (a full disk fails here, before any spawn) unless `staged` brings it staged,
 * with the record's room, by a restart before its stop.
 */
async function runWanted(
  ctx: Context,
  settings: Settings,
  staged?: { wish: WantedChange; record: StagedWrite },
): Promise<{ started: boolean; running: Running; keeperSearch?: Promise<readonly PidRecord[] | undefined> }> {
  // Under the lock, so the keeper (which acts only under it) never sees the old intent with the new process.
  const wish = staged?.wish ?? wantedChange(ctx, "running");
  let keeperSearch: Promise<readonly PidRecord[] | undefined> | undefined;
  const meanwhile = () => {
    wish.write();
    // keeperAfterStart's code and its search for loops no record names, while a fresh server starts up rather
    // than after it answers (on a failure ensureKeeper loads and searches again, and reports).
    keeperSearch = import("./updater.ts").then((updater) => updater.searchBeforeKeeperLaunch(ctx)).catch(() => undefined);
  };
  try {
    if (!staged) wish.stage();
    const outcome = await ensureRunning(ctx, settings, { meanwhile, ...(staged ? { record: staged.record } : {}) });
    return { ...outcome, ...(keeperSearch ? { keeperSearch } : {}) };
  } catch (error) {
    undoWish(ctx, wish, "start");
    throw error;
  }
}

/** A restart's start, staged before its stop (see stageAppServerRecord); undo() drops it if the stop fails. */
function stageStart(ctx: Context): { wish: WantedChange; record: StagedWrite; undo(): void } {
  const wish = wantedChange(ctx, "running");
  wish.stage();
  let record: StagedWrite;
  try {
    record = stageAppServerRecord(ctx);
  } catch (error) {
    wish.undo();
    throw error;
  }
  return { wish, record, undo: () => (record.abandon(), wish.undo()) };
}

function undoWish(ctx: Context, wish: WantedChange, command: string): void {
  try {
    wish.undo();
  } catch (error) {
    warn(`could not restore ${ctx.layout.wantedFile} after the failed ${command}: ${describeError(error)}`);
  }
}

export async function startAppServer(ctx: Context): Promise<LifecycleResult> {
  return underDaemonLock(ctx, async (settings) => {
    const { started, running, keeperSearch } = await runWanted(ctx, settings);
    await keeperAfterStart(ctx, keeperSearch);
    return result(ctx, started ? "started" : "alreadyRunning", running);
  });
}

/** Defaults stand in for a corrupt settings.json (see settingsOrDefaults). */
export async function stopAppServer(ctx: Context): Promise<LifecycleResult> {
  prepareStateDirs(ctx);
  return withLock(ctx.layout.daemonLock, DAEMON_LOCK_WAIT_MS, async () => {
    const wish = wantedChange(ctx, "stopped");
    const record = () => {
      try {
        wish.write();
      } catch (error) {
        // The server is being stopped; a read-only BERTH_HOME only loses the wish, which the keeper then cannot act on anyway.
        if (errnoCode(error) !== "EROFS") throw error;
        warn(`could not record the wanted state in ${ctx.layout.daemonDir}: the file system is read-only.`);
      }
    };
    let outcome: StopReport;
    try {
      // A full disk fails the stop here, before anything is signalled: a stopped server whose wish to stay
      // stopped could not be written would be started again by its keeper.
      wish.stage();
      outcome = await ensureStoppedTree(ctx, settingsOrDefaults(ctx), record);
    } catch (error) {
      // STOP_TIMEOUT comes after the SIGKILL: the server ends once the kernel lets it, and the keeper must
      // not then start again what the user stopped. Any other failure leaves the wish as it was.
      if (!(isBerthError(error, "STOP_TIMEOUT") && wish.written)) undoWish(ctx, wish, "stop");
      throw error;
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
    const staged = stageStart(ctx);
    let report: StopReport;
    try {
      report = await ensureStoppedTree(ctx, settings);
    } catch (error) {
      staged.undo();
      throw error;
    }
    const { running, keeperSearch } = await runWanted(ctx, settings, staged);
    await keeperAfterStart(ctx, keeperSearch);
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
  return (await stopThenStart(ctx, settings)).running;
}

export { ensureRunning };
export { ensureStopped, ensureStoppedTree, type StopReport } from "./stop-server.ts";

export async function waitForExit(pid: number, identity: string, timeoutMs: number): Promise<boolean> {
  const { processIdentity } = await import("../platform/process.ts");
  return waitUntil(() => processIdentity(pid) !== identity, timeoutMs);
}
