/**
 * Locks are flock(2) on a file that stays on disk: the kernel drops them when
 * the holder dies, so a killed berth never leaves a lock behind.
 */
import { closeSync, readFileSync, statSync } from "node:fs";
import { BerthError, errnoCode } from "../errors.ts";
import { flockTryExclusive, flockUnlock } from "../platform/ffi.ts";
import { openStateFile, STATE_APPEND_FLAGS, STATE_READ_FLAGS } from "../platform/fs.ts";

/** How long a second lifecycle command waits for the first (spec: 75 s). Tests may shorten it. */
export const DAEMON_LOCK_WAIT_MS = Number(process.env.BERTH_LOCK_WAIT_MS) || 75_000;
const LOCK_POLL_MIN_MS = 2;
const LOCK_POLL_MAX_MS = 50;

/**
 * flock needs only an open file, not a writable one: on a read-only BERTH_HOME
 * (EROFS) an existing lock file is opened for reading, so `stop` still works.
 */
function openLockFile(path: string): number {
  try {
    return openStateFile(path, STATE_APPEND_FLAGS);
  } catch (error) {
    if (errnoCode(error) !== "EROFS") throw error;
    return openStateFile(path, STATE_READ_FLAGS);
  }
}

export class FileLock {
  private constructor(
    readonly path: string,
    private fd: number | undefined,
  ) {}

  /** Takes the lock if it is free right now; undefined when someone else holds it. */
  static tryAcquire(path: string): FileLock | undefined {
    // Never through a symlink: a planted daemon.lock link must not make berth create files elsewhere.
    const fd = openLockFile(path);
    try {
      if (flockTryExclusive(fd) === "acquired") return new FileLock(path, fd);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    closeSync(fd);
    return undefined;
  }

  /** Waits for the lock until the deadline, then fails with LOCK_TIMEOUT naming the file. */
  static async acquire(path: string, timeoutMs: number): Promise<FileLock> {
    const deadline = performance.now() + timeoutMs;
    let pollMs = LOCK_POLL_MIN_MS;
    for (;;) {
      const lock = FileLock.tryAcquire(path);
      if (lock) return lock;
      if (performance.now() >= deadline) {
        const holder = describeLockHolder(path);
        throw new BerthError(
          "LOCK_TIMEOUT",
          `another berth command${holder ? ` (${holder})` : ""} still holds ${path} after ${Math.round(timeoutMs / 1000)} s; wait for it to finish and retry.`,
        );
      }
      await Bun.sleep(Math.min(pollMs, Math.max(1, deadline - performance.now())));
      pollMs = Math.min(pollMs * 2, LOCK_POLL_MAX_MS);
    }
  }

  /**
   * tryAcquire until the deadline, blocking this thread between tries (for locks held a few milliseconds, by
   * code that cannot wait on the event loop); undefined past the deadline, for the caller to decide.
   */
  static acquireSync(path: string, timeoutMs: number): FileLock | undefined {
    const deadline = performance.now() + timeoutMs;
    let pollMs = LOCK_POLL_MIN_MS;
    for (;;) {
      const lock = FileLock.tryAcquire(path);
      if (lock || performance.now() >= deadline) return lock;
      Bun.sleepSync(Math.min(pollMs, Math.max(1, deadline - performance.now())));
      pollMs = Math.min(pollMs * 2, LOCK_POLL_MAX_MS);
    }
  }

  get held(): boolean {
    return this.fd !== undefined;
  }

  release(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    flockUnlock(fd);
    closeSync(fd);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

/** True when another open file description holds the lock. Never blocks; never creates the file. */
export function isLockHeld(path: string): boolean {
  let fd: number;
  try {
    fd = openStateFile(path, STATE_READ_FLAGS);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return false;
    throw error;
  }
  try {
    if (flockTryExclusive(fd) === "acquired") {
      flockUnlock(fd);
      return false;
    }
    return true;
  } finally {
    closeSync(fd);
  }
}

export async function withLock<T>(path: string, timeoutMs: number, action: (lock: FileLock) => Promise<T>): Promise<T> {
  const lock = await FileLock.acquire(path, timeoutMs);
  try {
    return await action(lock);
  } finally {
    lock.release();
  }
}

/**
 * Pure: the pid holding a flock on the file with this device and inode, from
 * the text of Linux's /proc/locks ("1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF";
 * device as hex major:minor). Undefined when no such lock is listed.
 */
export function flockHolderFromProcLocks(text: string, dev: number, ino: number): number | undefined {
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & ~0xff);
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/);
    const kindAt = fields.indexOf("FLOCK");
    if (kindAt < 0 || fields[kindAt + 3] === undefined) continue;
    const pid = Number(fields[kindAt + 3]);
    const [maj, min, inode] = (fields[kindAt + 4] ?? "").split(":");
    if (Number(inode) === ino && Number.parseInt(maj ?? "", 16) === major && Number.parseInt(min ?? "", 16) === minor && pid > 0) return pid;
  }
  return undefined;
}

/** "pid 1234: berth start" for the process holding the lock, where the platform tells (Linux); never throws. */
function describeLockHolder(path: string): string | undefined {
  try {
    const stat = statSync(path);
    const pid = flockHolderFromProcLocks(readFileSync("/proc/locks", "utf8"), stat.dev, stat.ino);
    if (pid === undefined) return undefined;
    let command = "";
    try {
      command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).map((arg) => arg.split("/").pop()).join(" ").slice(0, 80);
    } catch {
      // exited meanwhile
    }
    return command ? `pid ${pid}: ${command}` : `pid ${pid}`;
  } catch {
    return undefined;
  }
}
