/**
 * The pidfile protocol shared by the app-server and the updater.
 *
 * Starter: take `<name>.pid.lock`, create the pidfile exclusively (empty =
 * reservation), spawn, publish the record by temp file + rename, release.
 * Readers never trust a record blindly: the process must still carry the
 * recorded identity, and stale state is removed only under the lock and only
 * if the file still holds what was judged stale.
 */
import { closeSync, openSync, renameSync, rmSync } from "node:fs";
import { warn } from "../diagnostics.ts";
import { BerthError, errnoCode } from "../errors.ts";
import { FILE_MODE, readStateFile, stageWrite, writeFileAtomic, type StagedWrite } from "../platform/fs.ts";
import { FileLock, isLockHeld } from "./lock.ts";
import { parsePidFile, type PidFileContent, type PidRecord } from "./pid-record.ts";

const STARTING_POLL_MS = 10;
/** Room staged for a record: more than any takes (pid, boot id and start time: about 100 bytes). */
const PID_RECORD_ROOM_BYTES = 256;

export { parsePidFile, type PidFileContent, type PidRecord } from "./pid-record.ts";

export type PidFileState = { kind: "missing" } | { kind: "starting" } | { kind: "running"; record: PidRecord };

export type PidFileVerdict = "missing" | "starting" | "running" | "staleReservation" | "staleRecord" | "corrupt";

/**
 * What a pidfile means. `lockHeld`: another starter holds the reservation
 * lock. `recordAlive`: the recorded process still runs with its identity.
 */
export function judgePidFile(content: PidFileContent, facts: { lockHeld: boolean; recordAlive: boolean }): PidFileVerdict {
  switch (content.kind) {
    case "missing":
      return "missing";
    case "empty":
      return facts.lockHeld ? "starting" : "staleReservation";
    case "corrupt":
      // Records are published by rename, so a starter never leaves a half record;
      // still, while the lock is held the file may be about to change.
      return facts.lockHeld ? "starting" : "corrupt";
    case "record":
      return facts.recordAlive ? "running" : "staleRecord";
  }
}

export function sameRecord(a: PidRecord, b: PidRecord): boolean {
  return a.pid === b.pid && a.processStartTime === b.processStartTime;
}

export class PidFile {
  readonly lockPath: string;

  constructor(
    readonly path: string,
    /** Whether the process (or group) a record names is still alive as recorded. */
    private readonly isAlive: (record: PidRecord) => boolean,
  ) {
    this.lockPath = `${path}.lock`;
  }

  readContent(): PidFileContent {
    return parsePidFile(readStateFile(this.path));
  }

  /** The state of the pidfile, cleaning stale leftovers on the way. Never blocks. */
  read(): PidFileState {
    const content = this.readContent();
    const verdict = judgePidFile(content, {
      lockHeld: content.kind === "empty" || content.kind === "corrupt" ? isLockHeld(this.lockPath) : false,
      recordAlive: content.kind === "record" ? this.isAlive(content.record) : false,
    });
    switch (verdict) {
      case "missing":
        return { kind: "missing" };
      case "starting":
        return { kind: "starting" };
      case "running":
        return { kind: "running", record: (content as { record: PidRecord }).record };
      case "staleReservation":
      case "corrupt":
        return this.cleanUnderLock(content);
      case "staleRecord":
        return this.refreshAfterStaleRecord((content as { record: PidRecord }).record);
    }
  }

  /**
   * Removes a stale record, but only if the file still holds that very record:
   * a replacement published meanwhile by another starter is kept and judged anew.
   */
  refreshAfterStaleRecord(stale: PidRecord): PidFileState {
    return this.cleanUnderLock({ kind: "record", record: stale });
  }

  private cleanUnderLock(judged: PidFileContent): PidFileState {
    const lock = FileLock.tryAcquire(this.lockPath);
    if (!lock) return { kind: "starting" };
    try {
      const now = this.readContent();
      if (!sameContent(now, judged)) {
        if (now.kind === "record" && this.isAlive(now.record)) return { kind: "running", record: now.record };
        if (now.kind === "missing") return { kind: "missing" };
        // Changed into something else stale: judge it under the lock we hold.
        this.discard(now);
        return { kind: "missing" };
      }
      this.discard(now);
      return { kind: "missing" };
    } finally {
      lock.release();
    }
  }

  /**
   * Removes stale content; corrupt content is kept aside for a human, never deleted. Lock must be held. On a
   * read-only file system it stays, still judged stale (not running), as removeIfHolds leaves it: a second
   * `stop` there says notRunning instead of failing on a file it cannot remove.
   */
  private discard(content: PidFileContent): void {
    if (content.kind === "record" && this.isAlive(content.record)) return;
    try {
      if (content.kind === "corrupt") {
        const aside = `${this.path}.corrupt-${Date.now()}`;
        renameSync(this.path, aside);
        warn(`${this.path} was not a valid pid record; moved it to ${aside} and treated the process as not running.`);
        return;
      }
      rmSync(this.path, { force: true });
    } catch (error) {
      if (errnoCode(error) !== "EROFS") throw error;
      warn(`${this.path} is stale but cannot be removed: the file system is read-only; treated the process as not running.`);
    }
  }

  /** Waits while a live reservation resolves (a concurrent start publishing or failing). */
  async waitWhileStarting(timeoutMs: number): Promise<PidFileState> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const state = this.read();
      if (state.kind !== "starting") return state;
      if (performance.now() >= deadline) {
        throw new BerthError(
          "LOCK_TIMEOUT",
          `${this.path} is still reserved by a starting process after ${Math.round(timeoutMs / 1000)} s; retry once it has finished.`,
        );
      }
      await Bun.sleep(STARTING_POLL_MS);
    }
  }

  /**
   * Creates the reservation under the lock the caller holds. Stale content left
   * by a killed starter is cleared first (we hold the lock, so no one else is
   * starting). Returns the live record instead when one already runs.
   */
  reserve(lock: FileLock): { kind: "reserved" } | { kind: "running"; record: PidRecord } {
    if (!lock.held || lock.path !== this.lockPath) throw new Error(`reserve needs ${this.lockPath} held`);
    for (let attempt = 0; attempt < 3; attempt += 1) {
      try {
        closeSync(openSync(this.path, "wx", FILE_MODE));
        return { kind: "reserved" };
      } catch (error) {
        if (errnoCode(error) !== "EEXIST") throw error;
      }
      const existing = this.readContent();
      if (existing.kind === "record" && this.isAlive(existing.record)) return { kind: "running", record: existing.record };
      this.discard(existing);
    }
    throw new BerthError("STATE_CORRUPT", `cannot reserve ${this.path}: it keeps reappearing; remove it and retry.`);
  }

  /**
   * Not fsynced: a record is only ever valid on this boot (its identity holds
   * the boot id), and what a power cut could leave — the old file, or an empty
   * one — reads as stale, as a stale reservation (see judgePidFile). The fsync
   * cost 0.4 ms on a quiet disk and 1 ms or more under load, while start waited.
   */
  publish(record: PidRecord, staged?: StagedWrite): void {
    const text = `${JSON.stringify(record)}\n`;
    if (staged) staged.commit(text, { durable: false });
    else writeFileAtomic(this.path, text, FILE_MODE, { durable: false });
  }

  /** Room for a record, taken before a launch (see stageWrite): a full disk fails then, with nothing spawned or stopped. */
  stageRecord(): StagedWrite {
    return stageWrite(this.path, PID_RECORD_ROOM_BYTES);
  }

  /** Writes a record for an adopted process under the lock. */
  adopt(lock: FileLock, record: PidRecord): void {
    if (!lock.held) throw new Error("adopt needs the pid lock");
    this.publish(record);
  }

  clearReservation(): void {
    const content = this.readContent();
    if (content.kind === "empty") rmSync(this.path, { force: true });
  }

  /** Removes the record only if the file still holds it. */
  removeIfHolds(record: PidRecord): void {
    const lock = FileLock.tryAcquire(this.lockPath);
    // If a starter holds the lock it is writing a new record; leave the file to it.
    if (!lock) return;
    try {
      const now = this.readContent();
      if (now.kind === "record" && sameRecord(now.record, record)) rmSync(this.path, { force: true });
    } catch (error) {
      // The process is gone either way; a record left on a read-only disk is judged stale by the next reader.
      if (errnoCode(error) !== "EROFS") throw error;
      warn(`could not remove ${this.path}: the file system is read-only; the stale record will be cleaned up later.`);
    } finally {
      lock.release();
    }
  }
}

function sameContent(a: PidFileContent, b: PidFileContent): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === "record" && b.kind === "record") return sameRecord(a.record, b.record);
  if (a.kind === "corrupt" && b.kind === "corrupt") return a.text === b.text;
  return true;
}
