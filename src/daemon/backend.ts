/**
 * The pid backend: launches a berth process detached and tracks it through a
 * pidfile (see pidfile.ts), and stops it without ever signalling a stranger.
 */
import { closeSync, lstatSync, renameSync } from "node:fs";
import { BerthError, describeError } from "../errors.ts";
import { openStateFile, STATE_APPEND_FLAGS, type StagedWrite } from "../platform/fs.ts";
import { terminalShield } from "../platform/inherited.ts";
import { isProcessGroupAlive, processEntryIdentity, processIdentity, signalGroup, signalProcess } from "../platform/process.ts";
import type { Context } from "./context.ts";
import { FileLock } from "./lock.ts";
import { PidFile, type PidFileState, type PidRecord } from "./pidfile.ts";
import type { ReadyWait } from "./ready.ts";
import type { Straggler, TreeSnapshot } from "./tree.ts";

/** How long to wait for the pidfile lock held by a concurrent starter. */
export const PID_LOCK_WAIT_MS = 15_000;
/** After SIGKILL, how long the process may take to vanish before STOP_TIMEOUT (spec: 10 s). */
export const STOP_KILL_WAIT_MS = 10_000;
/** A log larger than this is rotated to `<log>.1` before the next launch. */
export const LOG_MAX_BYTES = 8 * 1024 * 1024;
/** Descendants left behind by a stopped leader get at most this long between SIGTERM and SIGKILL. */
export const DESCENDANT_GRACE_MS = 2_000;
const STOP_POLL_MIN_MS = 2;
/** A graceful stop's signals, in order: the request, then SIGCONT so that a paused process can act on it. */
const TERMINATE_SIGNALS = ["SIGTERM", "SIGCONT"] as const;
const STOP_POLL_MAX_MS = 25;

export type LaunchSpec = {
  binary: string;
  args: string[];
  cwd: string;
  env: Record<string, string | undefined>;
  logPath: string;
  /** Hand the process a readiness pipe as fd 3 (see ready.ts); `launch` then returns its `ready` wait. */
  notifyReady?: boolean;
  /** Called with the exit status when the launched process ends while this launcher still runs (the keeper). */
  onExit?: (pid: number, exitCode: number | null, signal: string | null) => void;
  /**
   * The record's room (PidFile.stageRecord), taken by a caller that stops a process before this launch;
   * `launch` takes it itself otherwise. Either way `launch` uses it or drops it.
   */
  record?: StagedWrite;
};

export type BackendOptions = {
  pidPath: string;
  /** Updater: alive while any process of its group lives, stopped by signalling the group. */
  trackGroup: boolean;
};

export type StopOutcome = { status: "stopped" | "notRunning"; notEnded: Straggler[] };

/**
 * The app-server's backend: its pidfile, the process alone (no group). Here rather than in app-server.ts
 * so that `status`, which only inspects the record, does not load the start and stop code.
 */
export function appServerBackend(ctx: Context): PidBackend {
  return new PidBackend({ pidPath: ctx.layout.appServerPid, trackGroup: false });
}

/** The process exited before berth could record it. */
export class ExitedAtLaunch extends Error {}

export class PidBackend {
  readonly pidFile: PidFile;

  constructor(readonly options: BackendOptions) {
    this.pidFile = new PidFile(options.pidPath, (record) => this.isAlive(record));
  }

  /**
   * Leader alive with its recorded identity. A group-tracked record (the
   * updater) is alive while its leader's pid is still held by the recorded
   * process — running, or a zombie not yet reaped, which keeps the pid and so
   * the group id from being reused — and some member of the group runs. A
   * leader that is gone, or a pid now carrying another start time or another
   * boot's id, proves nothing: the group with that id may be a stranger's.
   */
  isAlive(record: PidRecord): boolean {
    if (processIdentity(record.pid) === record.processStartTime) return true;
    if (!this.options.trackGroup) return false;
    return this.leaderHoldsGroup(record) && isProcessGroupAlive(record.pid);
  }

  /** The recorded leader (alive or zombie) still occupies its pid, so group `pid` is the one it created. */
  private leaderHoldsGroup(record: PidRecord): boolean {
    return processEntryIdentity(record.pid)?.identity === record.processStartTime;
  }

  inspect(): PidFileState {
    return this.pidFile.read();
  }

  /**
   * Reserve → spawn → publish. Returns the running record instead when one
   * already exists. A failed spawn removes the reservation (START_FAILED).
   */
  async launch(spec: LaunchSpec): Promise<{ kind: "started" | "running"; record: PidRecord; ready?: ReadyWait }> {
    let staged = spec.record;
    try {
      // Each of these modules is loaded by the path that needs it (status and version load this one too).
      const readiness = spec.notifyReady ? await import("./ready.ts") : undefined;
      const shield = await terminalShield();
      const lock = await FileLock.acquire(this.pidFile.lockPath, PID_LOCK_WAIT_MS);
      try {
        const reservation = this.pidFile.reserve(lock);
        if (reservation.kind === "running") return reservation;
        try {
          // Room for the record before the spawn: a full disk fails the start here, with nothing spawned.
          staged ??= this.pidFile.stageRecord();
        } catch (error) {
          this.pidFile.clearReservation();
          throw error;
        }
        return this.spawnAndPublish(spec, readiness, staged, shield);
      } finally {
        lock.release();
      }
    } finally {
      staged?.abandon();
    }
  }

  /** launch's spawn and record, under the pid lock with the reservation made and the record's room staged. */
  private spawnAndPublish(
    spec: LaunchSpec,
    readiness: typeof import("./ready.ts") | undefined,
    staged: StagedWrite,
    shield: <T>(spawn: () => T) => T,
  ): { kind: "started"; record: PidRecord; ready?: ReadyWait } {
    let pid: number;
    let ready: ReadyWait | undefined;
    try {
      ({ pid, ready } = shield(() => spawnDetached(spec, readiness)));
    } catch (error) {
      this.pidFile.clearReservation();
      if (error instanceof BerthError) throw error;
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
      this.pidFile.publish(record, staged);
    } catch (error) {
      // Could not record it (a copy-on-write disk that filled up after all?): no untracked process is left behind.
      signalGroup(pid, "SIGKILL");
      ready?.cancel();
      this.pidFile.clearReservation();
      throw new BerthError("START_FAILED", `launched pid ${pid} but could not write ${this.pidFile.path}: ${describeError(error)}`);
    }
    return { kind: "started", record, ...(ready ? { ready } : {}) };
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
   * by an identity check, so a reused pid is never hit. While the leader is
   * provably ours its whole tree (children that left the group included) is
   * remembered; what of it outlives the leader is ended too, member by member,
   * and whatever could not be ended is returned.
   */
  async stop(record: PidRecord, graceMs: number): Promise<"stopped" | "notRunning"> {
    return (await this.stopTree(record, graceMs)).status;
  }

  /** `signalled`: runs once the stop is under way (SIGTERM sent), while the process shuts down; not when it was not running. */
  async stopTree(record: PidRecord, graceMs: number, signalled: () => void = () => {}): Promise<StopOutcome> {
    if (!this.isAlive(record)) {
      this.pidFile.removeIfHolds(record);
      return { status: "notRunning", notEnded: [] };
    }
    const [{ TreeSnapshot }, { sleepUntilExit }] = await Promise.all([import("./tree.ts"), import("./exit-wait.ts")]);
    const leaderIsOurs = () => this.leaderHoldsGroup(record);
    const tree = new TreeSnapshot(record.pid, leaderIsOurs);
    tree.scan(true);
    // SIGCONT after SIGTERM (as systemd does): a process paused by SIGSTOP (a debugger, `kill -STOP`) runs its
    // SIGTERM handler only once continued; else the stop waited the whole grace and ended it by SIGKILL.
    // Each signal after its own identity check: the SIGTERM may have ended it, and its pid be another's since.
    for (const signal of TERMINATE_SIGNALS) {
      if (this.options.trackGroup) {
        if (leaderIsOurs()) signalGroup(record.pid, signal);
      } else if (processIdentity(record.pid) === record.processStartTime) {
        signalProcess(record.pid, signal);
      }
    }
    const leaderGone = () => processIdentity(record.pid) !== record.processStartTime;
    const gone = this.options.trackGroup ? () => !this.isAlive(record) : leaderGone;
    const goneWatching = () => {
      tree.scan();
      return gone();
    };
    const scan = () => tree.scan();
    // Whatever it does, the process is on its way out: wait for it before reporting a failure of `signalled`.
    let failed: { error: unknown } | undefined;
    try {
      signalled();
    } catch (error) {
      failed = { error };
    }
    const waitForExit = async (timeoutMs: number): Promise<boolean> => {
      // Sleeps on the leader's exit where the platform allows (exit-wait.ts; `scan` runs before each slice of that
      // sleep, as it would before each poll), then polls what remains of `goneWatching`.
      const deadline = performance.now() + timeoutMs;
      await sleepUntilExit(record, timeoutMs, scan);
      return waitUntil(goneWatching, Math.max(0, deadline - performance.now()));
    };
    if (!(await waitForExit(graceMs))) {
      tree.scan(true);
      if (leaderIsOurs()) signalGroup(record.pid, "SIGKILL");
      if (!(await waitForExit(STOP_KILL_WAIT_MS))) {
        throw new BerthError(
          "STOP_TIMEOUT",
          `pid ${record.pid} still runs ${Math.round((graceMs + STOP_KILL_WAIT_MS) / 1000)} s after SIGTERM and SIGKILL; it may be stuck in the kernel (check \`cat /proc/${record.pid}/status\`).`,
        );
      }
    }
    const notEnded = await endStragglers(tree, Math.min(graceMs, DESCENDANT_GRACE_MS));
    this.pidFile.removeIfHolds(record);
    if (failed) throw failed.error;
    return { status: "stopped", notEnded };
  }
}

/** What the leader left behind (its own group or children that left it): TERM, then KILL, then report. */
async function endStragglers(tree: TreeSnapshot, graceMs: number): Promise<Straggler[]> {
  if (tree.alive().length === 0) return [];
  const refused = new Map<number, Straggler>();
  for (const entry of tree.signal("SIGTERM")) refused.set(entry.pid, entry);
  if (!(await waitUntil(() => tree.alive().length === 0, graceMs))) {
    for (const entry of tree.signal("SIGKILL")) refused.set(entry.pid, entry);
    await waitUntil(() => tree.alive().length === 0, STOP_KILL_WAIT_MS);
  }
  return tree.alive().map((pid) => refused.get(pid) ?? { pid, reason: `still running ${Math.round(STOP_KILL_WAIT_MS / 1000)} s after SIGKILL` });
}

export async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  let pollMs = STOP_POLL_MIN_MS;
  for (;;) {
    if (condition()) return true;
    if (performance.now() >= deadline) return false;
    await Bun.sleep(Math.min(pollMs, Math.max(1, deadline - performance.now())));
    pollMs = Math.min(pollMs * 2, STOP_POLL_MAX_MS);
  }
}

function rotateLog(path: string): void {
  try {
    const stat = lstatSync(path);
    if (stat.isFile() && stat.size > LOG_MAX_BYTES) renameSync(path, `${path}.1`);
  } catch {
    // no log yet
  }
}

/**
 * Own session and process group, stdin /dev/null, stdout+stderr appended to
 * the log, nothing else of ours inherited, so the caller (an SSH session) can
 * exit at once and its pipes reach EOF. `readiness` (ready.ts, given when the
 * spec asks for a notification) adds the readiness pipe as fd 3.
 */
function spawnDetached(spec: LaunchSpec, readiness: typeof import("./ready.ts") | undefined): { pid: number; ready?: ReadyWait } {
  rotateLog(spec.logPath);
  const logFd = openStateFile(spec.logPath, STATE_APPEND_FLAGS);
  try {
    const child = Bun.spawn({
      cmd: [spec.binary, ...spec.args],
      cwd: spec.cwd,
      env: readiness ? { ...spec.env, [readiness.READY_FD_ENV]: String(readiness.READY_FD) } : spec.env,
      stdio: ["ignore", logFd, logFd, ...(readiness ? (["pipe"] as const) : [])],
      detached: true,
    });
    child.unref();
    const onExit = spec.onExit;
    if (onExit) void child.exited.then(() => onExit(child.pid, child.exitCode, child.signalCode == null ? null : String(child.signalCode)));
    const readFd = readiness ? child.stdio[readiness.READY_FD] : undefined;
    return { pid: child.pid, ...(readiness && typeof readFd === "number" ? { ready: readiness.waitForReady(readFd) } : {}) };
  } finally {
    closeSync(logFd);
  }
}
