/**
 * The pid backend: launches a berth process detached and tracks it through a
 * pidfile (see pidfile.ts), and stops it without ever signalling a stranger.
 */
import { closeSync, openSync, renameSync, statSync } from "node:fs";
import { BerthError, describeError } from "../errors.ts";
import { FILE_MODE } from "../platform/fs.ts";
import { isProcessGroupAlive, processIdentity, signalGroup, signalProcess } from "../platform/process.ts";
import { sleepUntilExit } from "./exit-wait.ts";
import { FileLock } from "./lock.ts";
import { PidFile, type PidFileState, type PidRecord } from "./pidfile.ts";
import { READY_FD, READY_FD_ENV, waitForReady, type ReadyWait } from "./ready.ts";

/** How long to wait for the pidfile lock held by a concurrent starter. */
export const PID_LOCK_WAIT_MS = 15_000;
/** After SIGKILL, how long the process may take to vanish before STOP_TIMEOUT (spec: 10 s). */
export const STOP_KILL_WAIT_MS = 10_000;
/** A log larger than this is rotated to `<log>.1` before the next launch. */
export const LOG_MAX_BYTES = 8 * 1024 * 1024;
const STOP_POLL_MIN_MS = 2;
const STOP_POLL_MAX_MS = 25;

export type LaunchSpec = {
  binary: string;
  args: string[];
  cwd: string;
  env: Record<string, string | undefined>;
  logPath: string;
  /** Hand the process a readiness pipe as fd 3 (see ready.ts); `launch` then returns its `ready` wait. */
  notifyReady?: boolean;
};

export type BackendOptions = {
  pidPath: string;
  /** Updater: alive while any process of its group lives, stopped by signalling the group. */
  trackGroup: boolean;
};

/** The process exited before berth could record it. */
export class ExitedAtLaunch extends Error {}

export class PidBackend {
  readonly pidFile: PidFile;

  constructor(readonly options: BackendOptions) {
    this.pidFile = new PidFile(options.pidPath, (record) => this.isAlive(record));
  }

  /**
   * Leader alive with its recorded identity; for group-tracked processes also
   * any survivor of its group, as long as the leader's pid was not reused (a
   * pid that names another process now means our group emptied out first: the
   * kernel never reuses the pid of a live group).
   */
  isAlive(record: PidRecord): boolean {
    const identity = processIdentity(record.pid);
    if (identity === record.processStartTime) return true;
    if (!this.options.trackGroup || identity !== undefined) return false;
    return isProcessGroupAlive(record.pid);
  }

  /** True while members of the record's group other than a recorded-dead leader remain. */
  private groupSurvives(record: PidRecord): boolean {
    const identity = processIdentity(record.pid);
    if (identity !== undefined && identity !== record.processStartTime) return false;
    return isProcessGroupAlive(record.pid);
  }

  inspect(): PidFileState {
    return this.pidFile.read();
  }

  /**
   * Reserve → spawn → publish. Returns the running record instead when one
   * already exists. A failed spawn removes the reservation (START_FAILED).
   */
  async launch(spec: LaunchSpec): Promise<{ kind: "started" | "running"; record: PidRecord; ready?: ReadyWait }> {
    const lock = await FileLock.acquire(this.pidFile.lockPath, PID_LOCK_WAIT_MS);
    try {
      const reservation = this.pidFile.reserve(lock);
      if (reservation.kind === "running") return reservation;
      let pid: number;
      let ready: ReadyWait | undefined;
      try {
        ({ pid, ready } = spawnDetached(spec));
      } catch (error) {
        this.pidFile.clearReservation();
        throw new BerthError(
          "START_FAILED",
          `failed to spawn detached ${spec.args[0] ?? "process"} process using ${spec.binary}: ${describeError(error)}`,
        );
      }
      const identity = processIdentity(pid);
      if (identity === undefined) {
        ready?.cancel();
        this.pidFile.clearReservation();
        throw new ExitedAtLaunch(`${spec.binary} exited immediately after launch (pid ${pid})`);
      }
      const record = { pid, processStartTime: identity };
      try {
        this.pidFile.publish(record);
      } catch (error) {
        // Could not record it (disk full?): do not leave an untracked process behind.
        signalGroup(pid, "SIGKILL");
        ready?.cancel();
        this.pidFile.clearReservation();
        throw new BerthError("START_FAILED", `launched pid ${pid} but could not write ${this.pidFile.path}: ${describeError(error)}`);
      }
      return { kind: "started", record, ...(ready ? { ready } : {}) };
    } finally {
      lock.release();
    }
  }

  /** Records an already running process (adoption of a server whose record was lost). */
  async adopt(pid: number): Promise<PidRecord | undefined> {
    const identity = processIdentity(pid);
    if (identity === undefined) return undefined;
    const lock = await FileLock.acquire(this.pidFile.lockPath, PID_LOCK_WAIT_MS);
    try {
      const reservation = this.pidFile.reserve(lock);
      if (reservation.kind === "running") return reservation.record;
      const record = { pid, processStartTime: identity };
      this.pidFile.publish(record);
      return record;
    } finally {
      lock.release();
    }
  }

  /**
   * SIGTERM (to the group when group-tracked), wait `graceMs`, SIGKILL the
   * group, wait STOP_KILL_WAIT_MS, else STOP_TIMEOUT. Every signal is preceded
   * by an identity check, so a reused pid is never hit.
   */
  async stop(record: PidRecord, graceMs: number): Promise<"stopped" | "notRunning"> {
    if (!this.isAlive(record)) {
      this.pidFile.removeIfHolds(record);
      return "notRunning";
    }
    if (this.options.trackGroup) {
      if (this.isAlive(record)) signalGroup(record.pid, "SIGTERM");
    } else if (processIdentity(record.pid) === record.processStartTime) {
      signalProcess(record.pid, "SIGTERM");
    }
    const leaderGone = () => processIdentity(record.pid) !== record.processStartTime;
    const gone = this.options.trackGroup ? () => !this.isAlive(record) : leaderGone;
    if (!(await waitForExit(record, gone, graceMs))) {
      this.killGroup(record);
      if (!(await waitForExit(record, gone, STOP_KILL_WAIT_MS))) {
        throw new BerthError(
          "STOP_TIMEOUT",
          `pid ${record.pid} still runs ${Math.round((graceMs + STOP_KILL_WAIT_MS) / 1000)} s after SIGTERM and SIGKILL; it may be stuck in the kernel (check \`cat /proc/${record.pid}/status\`).`,
        );
      }
    }
    // Whatever the leader left in its own group is an orphan of ours: end it too.
    if (this.groupSurvives(record)) {
      this.killGroup(record);
      await waitUntil(() => !this.groupSurvives(record), STOP_KILL_WAIT_MS);
    }
    this.pidFile.removeIfHolds(record);
    return "stopped";
  }

  private killGroup(record: PidRecord): void {
    if (processIdentity(record.pid) === record.processStartTime || this.groupSurvives(record)) {
      signalGroup(record.pid, "SIGKILL");
    }
  }
}

export async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let pollMs = STOP_POLL_MIN_MS;
  for (;;) {
    if (condition()) return true;
    if (Date.now() >= deadline) return false;
    await Bun.sleep(Math.min(pollMs, Math.max(1, deadline - Date.now())));
    pollMs = Math.min(pollMs * 2, STOP_POLL_MAX_MS);
  }
}

/** Sleeps on the leader's exit where the platform allows (exit-wait.ts), then polls what remains of `gone`. */
async function waitForExit(record: PidRecord, gone: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  await sleepUntilExit(record, timeoutMs);
  return waitUntil(gone, Math.max(0, deadline - Date.now()));
}

function rotateLog(path: string): void {
  try {
    if (statSync(path).size > LOG_MAX_BYTES) renameSync(path, `${path}.1`);
  } catch {
    // no log yet
  }
}

/**
 * Own session and process group, stdin /dev/null, stdout+stderr appended to
 * the log, nothing else of ours inherited, so the caller (an SSH session) can
 * exit at once and its pipes reach EOF.
 */
function spawnDetached(spec: LaunchSpec): { pid: number; ready?: ReadyWait } {
  rotateLog(spec.logPath);
  const logFd = openSync(spec.logPath, "a", FILE_MODE);
  try {
    const child = Bun.spawn({
      cmd: [spec.binary, ...spec.args],
      cwd: spec.cwd,
      env: spec.notifyReady ? { ...spec.env, [READY_FD_ENV]: String(READY_FD) } : spec.env,
      stdio: ["ignore", logFd, logFd, ...(spec.notifyReady ? (["pipe"] as const) : [])],
      detached: true,
    });
    child.unref();
    const readFd = spec.notifyReady ? child.stdio[READY_FD] : undefined;
    return { pid: child.pid, ...(typeof readFd === "number" ? { ready: waitForReady(readFd) } : {}) };
  } finally {
    closeSync(logFd);
  }
}
