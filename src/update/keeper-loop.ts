/**
 * The keeper: one step of it per event of `update-loop` (the record changed,
 * the watched app-server is gone, a deadline came; see keeper-sh.ts), in a
 * short-lived process: it looks at the recorded app-server and restarts it
 * when it exited unasked while it is wanted (see src/daemon/keeper.ts for the
 * decisions). Its memory between steps (what it watches, when it may retry)
 * lives in keeper.json. It restarts only under daemon.lock taken without
 * waiting, so a user's start/stop/restart always wins and two app-servers
 * never run, and it re-reads the wanted state under that lock. It never
 * signals a process: a restart goes through the same ensureRunning as
 * `start`, whose pid backend checks identities.
 */
import { describeError } from "../errors.ts";
import { appServerBackend, ensureRunning } from "../daemon/app-server.ts";
import { logTail } from "../daemon/await-ready.ts";
import { assertManagedBinary, prepareStateDirs, settingsOf, type Context } from "../daemon/context.ts";
import { MAX_CRASHES, readKeeperState, recentCrashes, restartDecision, retryDueAt, writeKeeperState, type KeeperState } from "../daemon/keeper.ts";
import { FileLock } from "../daemon/lock.ts";
import { sameRecord, type PidRecord } from "../daemon/pidfile.ts";
import { readWanted } from "../daemon/wanted.ts";
import { processIdentity } from "../platform/process.ts";

/** While a starter holds the reservation or daemon.lock is busy, look again this soon. */
export const KEEPER_RETRY_MS = 500;
/** A server the keeper launched is its child: wait this long for the runtime to report its exit status. */
const EXIT_STATUS_WAIT_MS = 200;
const MAX_REMEMBERED_EXITS = 8;
/** While a server the keeper does not own answers on the socket, it looks again this often. */
const UNMANAGED_RECHECK_MS = 5_000;
const LAST_EXIT_TAIL_BYTES = 1_024;

type Log = (line: string) => void;

/** What the loop watches after a step, and how soon (ms; Infinity: only on an event) it must call the next. */
export type KeeperVerdict = { watch?: PidRecord; wakeInMs: number };

/** Pure-ish: whether an identity was recorded on this boot (Linux identities start with the boot id). */
function sameBoot(identity: string): boolean {
  const own = processIdentity(process.pid) ?? "";
  return identity.split("/")[0] === own.split("/")[0];
}

export class Keeper {
  private state: KeeperState;
  /** When this step found a busy lock or a starting server: look again soon. */
  private again = false;
  /** keeper.json as last read or written, so an unchanged state is not rewritten. */
  private written: string;
  /** Exit statuses of the servers this keeper launched (its children), by pid; bounded to the last few. */
  private readonly exits = new Map<number, { exitCode: number | null; signal: string | null }>();
  private lastLaunchedPid: number | undefined;
  /** How many exits of launched servers were reported so far; a failed restart waits for the next one. */
  private exitCount = 0;

  constructor(
    private readonly ctx: Context,
    private readonly log: Log,
  ) {
    this.state = readKeeperState(ctx.layout.keeperState);
    this.written = JSON.stringify(this.state);
  }

  /** The record last seen running (kept in keeper.json between steps). */
  private get lastSeen(): PidRecord | undefined {
    return this.state.watching;
  }

  private set lastSeen(record: PidRecord | undefined) {
    this.state = { ...this.state, watching: record };
  }

  private get nextAttemptAt(): number {
    return this.state.retryAt ?? 0;
  }

  private set nextAttemptAt(at: number) {
    this.state = { ...this.state, retryAt: at > 0 ? at : undefined, retrySetAt: at > 0 ? Date.now() : undefined };
  }

  /**
   * One look (and, if due, one restart); then what to watch and when to be
   * called again. A failure (an unreadable state file) is logged and retried
   * shortly, like a busy lock.
   */
  async step(): Promise<KeeperVerdict> {
    try {
      await this.tick();
      this.persist();
    } catch (error) {
      this.log(`keeper: ${describeError(error).split("\n")[0]}`);
      this.again = true;
    }
    const watch = this.state.state === "running" ? this.lastSeen : undefined;
    if (this.again) return { ...(watch ? { watch } : {}), wakeInMs: KEEPER_RETRY_MS };
    const retryIn = this.state.state === "crashed" || this.state.state === "unmanaged" ? this.nextAttemptAt - Date.now() : Infinity;
    return { ...(watch ? { watch } : {}), wakeInMs: Math.max(0, retryIn) };
  }

  /** A verdict is written at once (status reads it, and a step may be cut short); the rest at the end of the step. */
  private save(change: Partial<KeeperState>): void {
    this.state = { ...this.state, ...change };
    this.persist();
  }

  private persist(): void {
    const text = JSON.stringify(this.state);
    if (text === this.written) return;
    writeKeeperState(this.ctx.layout.keeperState, this.state);
    this.written = text;
  }

  /**
   * The recorded app-server if it runs as recorded; "starting" while a starter
   * holds the reservation. A record of this boot whose process is gone (the
   * keeper was not yet watching when it died) becomes the one last seen, so
   * that exit counts as a crash too.
   */
  private observe(): PidRecord | "starting" | undefined {
    const content = appServerBackend(this.ctx).pidFile.readContent();
    if (content.kind === "empty") return "starting";
    if (content.kind !== "record") return undefined;
    if (processIdentity(content.record.pid) === content.record.processStartTime) return content.record;
    const counted = this.state.exited && sameRecord(this.state.exited, content.record);
    if (!this.lastSeen && !counted && sameBoot(content.record.processStartTime)) this.lastSeen = content.record;
    return undefined;
  }

  async tick(): Promise<void> {
    // A wall clock set back since the retry was planned must not stretch the wait: planned anew, from now.
    const planned = this.state.retryAt;
    if (planned !== undefined && retryDueAt(planned, this.state.retrySetAt, Date.now()) !== planned) {
      this.nextAttemptAt = retryDueAt(planned, this.state.retrySetAt, Date.now());
    }
    const wanted = readWanted(this.ctx);
    if (wanted.appServer !== "running") {
      this.lastSeen = undefined;
      this.nextAttemptAt = 0;
      this.save({ state: "stopped", nextRestartAt: undefined });
      return;
    }
    if (this.state.state === "failed" && this.state.failedAt && wanted.since > this.state.failedAt) {
      this.save({ state: "stopped", crashes: [], failedAt: undefined });
    }
    if (this.runningOrStarting()) return;
    if (this.state.state === "failed") return;
    if (!this.lastSeen && Date.now() < this.nextAttemptAt) return;
    await this.underLock();
  }

  /**
   * The exit status of a server this keeper launched (its child); null fields
   * for one it did not launch (`start` did): only a parent learns how its
   * child ended.
   */
  private async exitStatusOf(pid: number | undefined): Promise<{ exitCode: number | null; signal: string | null }> {
    if (pid === undefined || pid !== this.lastLaunchedPid) return { exitCode: null, signal: null };
    const deadline = performance.now() + EXIT_STATUS_WAIT_MS;
    while (!this.exits.has(pid) && performance.now() < deadline) await Bun.sleep(10);
    return this.exits.get(pid) ?? { exitCode: null, signal: null };
  }

  /** Counts one crash (`exited`: the record that went away, never counted twice) and decides what comes next. */
  private async crashed(what: string, exited?: PidRecord, status: { exitCode: number | null; signal: string | null } = { exitCode: null, signal: null }): Promise<void> {
    const now = Date.now();
    const crashes = [...recentCrashes(this.state.crashes, now), now];
    const lastExit = { at: new Date(now).toISOString(), ...status, logTail: logTail(this.ctx.layout.appServerLog, LAST_EXIT_TAIL_BYTES) };
    if (exited) this.state = { ...this.state, exited };
    const decision = restartDecision(crashes, now);
    if (decision.action === "giveUp" && (await this.rolledBack(what, now, lastExit))) return;
    if (decision.action === "giveUp") {
      this.log(`keeper: ${what}; ${crashes.length} crashes within 10 minutes: giving up (run \`berth start\` once it is fixed)`);
      this.save({ state: "failed", crashes, lastExit, failedAt: new Date(now).toISOString(), nextRestartAt: undefined });
      return;
    }
    this.nextAttemptAt = now + decision.delayMs;
    this.log(`keeper: ${what}; restarting ${decision.delayMs === 0 ? "now" : `in ${decision.delayMs} ms`}`);
    this.save({ state: "crashed", crashes, lastExit, nextRestartAt: new Date(this.nextAttemptAt).toISOString() });
  }

  /**
   * Instead of giving up on a release a rollout put in place shortly before: back to the one it replaced,
   * quarantined (crash-rollback.ts), and restarted at once with a fresh count. Under daemon.lock.
   */
  private async rolledBack(what: string, now: number, lastExit: KeeperState["lastExit"]): Promise<boolean> {
    let back: { version: string; previous: string } | undefined;
    try {
      back = await (await import("./crash-rollback.ts")).rollBackCrashLoop(this.ctx, now);
    } catch (error) {
      this.log(`keeper: could not roll back: ${describeError(error).split("\n")[0]}`);
    }
    if (!back) return false;
    this.log(`keeper: ${what}; ${MAX_CRASHES} crashes of ${back.version} soon after its rollout: rolled back to ${back.previous} and quarantined ${back.version}`);
    this.nextAttemptAt = 0;
    this.save({ state: "crashed", crashes: [], lastExit, nextRestartAt: undefined });
    return true;
  }

  /** Looks at the app-server: true when it runs (watched from now on) or is still starting (looked at again soon). */
  private runningOrStarting(): boolean {
    const seen = this.observe();
    if (seen === "starting") this.again = true;
    else if (seen) this.watching(seen);
    return seen !== undefined;
  }

  /** The app-server runs as recorded: watch it (the sh loop is told its identity). */
  private watching(seen: PidRecord): void {
    if (!this.lastSeen || this.lastSeen.pid !== seen.pid) this.log(`keeper: watching app-server pid ${seen.pid}`);
    this.lastSeen = seen;
    this.save({ state: "running", failedAt: undefined, nextRestartAt: undefined });
  }

  /**
   * A crash is confirmed, and a restart made, only under daemon.lock taken
   * without waiting: a busy lock means a user command (or a rollout) acts, so
   * look again next tick. The wanted state is re-read under the lock.
   */
  private async underLock(): Promise<void> {
    const lock = FileLock.tryAcquire(this.ctx.layout.daemonLock);
    if (!lock) {
      this.again = true;
      return;
    }
    try {
      if (readWanted(this.ctx).appServer !== "running") return;
      // It may have come up between the two looks (a starter finished): running, and watched from now on.
      if (this.runningOrStarting()) return;
      if (this.lastSeen) {
        const exited = this.lastSeen;
        await this.crashed(`app-server pid ${exited.pid} exited unasked`, exited, await this.exitStatusOf(exited.pid));
        this.lastSeen = undefined;
      }
      if (this.state.state === "failed" || Date.now() < this.nextAttemptAt) return;
      await this.restart();
    } finally {
      lock.release();
    }
  }

  private recordExit(pid: number, exitCode: number | null, signal: string | null): void {
    this.exits.delete(pid);
    this.exits.set(pid, { exitCode, signal });
    this.exitCount += 1;
    while (this.exits.size > MAX_REMEMBERED_EXITS) this.exits.delete(this.exits.keys().next().value as number);
  }

  private async restart(): Promise<void> {
    let result;
    const exitsBefore = this.exitCount;
    try {
      // A missing binary or an unsafe folder fails this restart like a crash: backoff, then give up.
      assertManagedBinary(this.ctx);
      prepareStateDirs(this.ctx);
      result = await ensureRunning(this.ctx, settingsOf(this.ctx), { onExit: (pid, exitCode, signal) => this.recordExit(pid, exitCode, signal) });
    } catch (error) {
      // A server that died before answering was our child: its status arrives as it is reaped.
      const deadline = performance.now() + EXIT_STATUS_WAIT_MS;
      while (this.exitCount === exitsBefore && performance.now() < deadline) await Bun.sleep(10);
      const status = this.exitCount !== exitsBefore ? [...this.exits.values()].pop() : undefined;
      await this.crashed(`restart failed: ${describeError(error).split("\n")[0]}`, undefined, status);
      return;
    }
    this.lastLaunchedPid = result.started ? result.running.pid : this.lastLaunchedPid;
    if (!result.running.managed) {
      // Someone else's server holds the socket: look again now and then, not every tick.
      this.nextAttemptAt = Date.now() + UNMANAGED_RECHECK_MS;
      this.save({ state: "unmanaged", nextRestartAt: undefined });
      return;
    }
    const record = this.observe();
    this.lastSeen = record && record !== "starting" ? record : undefined;
    this.log(`keeper: app-server pid ${result.running.pid} answers`);
    this.save({ state: "running", restarts: this.state.restarts + (result.started ? 1 : 0), nextRestartAt: undefined });
  }
}
