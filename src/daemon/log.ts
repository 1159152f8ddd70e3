/**
 * The daemons' logs: every line starts with an ISO-8601 time, and a log is
 * rotated by the process that writes it once it passes `logs.maxBytes`
 * (`log` → `log.1` → … → `log.<keep>`, the oldest dropped).
 *
 * The launcher still points a daemon's stdout/stderr at its log, so what the
 * runtime prints before berth's code runs (a crash at start-up, a module that
 * fails to load) is kept. Once running, the daemon routes berth's own output
 * (`writeOutput`, which the logger and every renderer use) through
 * `captureStdio`, which stamps and rotates; the inherited descriptors are then
 * only used by the runtime itself (a fatal error, `console.*`), unstamped.
 */
import { closeSync, fstatSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { openStateFile, STATE_APPEND_FLAGS } from "../platform/fs.ts";
import { routeOutput } from "../stdio.ts";
import { settingsOf, type Context } from "./context.ts";

export type LogLimits = { maxBytes: number; keep: number };

export const LOG_DEFAULT_LIMITS: LogLimits = { maxBytes: 8 * 1024 * 1024, keep: 3 };
/**
 * The most old files a rotation keeps, whatever logs.keep says: each rotation renames every one of them,
 * and logs.keep 1e9 (a whole number, so a valid setting) planned a billion renames and killed the daemon.
 */
export const LOG_KEEP_MAX = 1000;
/** A running daemon re-reads logs.maxBytes/keep from settings at most this often. */
const LIMITS_REFRESH_MS = 5_000;
/** A partial line (no newline yet) is flushed once it grows past this. */
const PARTIAL_LINE_MAX_BYTES = 64 * 1024;

/** The log limits of the settings, or the defaults while settings.json cannot be read. */
export function logLimitsOf(ctx: Context): LogLimits {
  try {
    return settingsOf(ctx).logs;
  } catch {
    return LOG_DEFAULT_LIMITS;
  }
}

/** Pure: the files of a rotation, oldest first, as [from, to] renames; `to` undefined means delete; at most LOG_KEEP_MAX kept. */
export function rotationPlan(path: string, wanted: number): Array<[string, string | undefined]> {
  const steps: Array<[string, string | undefined]> = [];
  const keep = Math.min(wanted, LOG_KEEP_MAX);
  if (!(keep > 0)) return [[path, undefined]];
  steps.push([`${path}.${keep}`, undefined]);
  for (let i = keep - 1; i >= 1; i -= 1) steps.push([`${path}.${i}`, `${path}.${i + 1}`]);
  steps.push([path, `${path}.1`]);
  return steps;
}

export function rotate(path: string, keep: number): void {
  for (const [from, to] of rotationPlan(path, keep)) {
    try {
      if (to === undefined) rmSync(from, { force: true });
      else renameSync(from, to);
    } catch {
      // a missing older file is normal
    }
  }
}

/** Pure: `text` with an ISO time at the start of every line. */
export function stampLines(text: string, now: Date): string {
  const stamp = now.toISOString();
  return text
    .split("\n")
    .map((line) => `${stamp} ${line}\n`)
    .join("");
}

/**
 * Appends whole lines (stamped) to a log, rotating first when it would pass
 * the limit. Opened like every state file (openStateFile): a symlink planted
 * at the log's path is refused (UNSAFE_STATE), so nothing outside BERTH_HOME
 * is ever written through it.
 */
export function appendLog(path: string, text: string, limits: LogLimits = LOG_DEFAULT_LIMITS, now = new Date()): void {
  const bytes = Buffer.from(stampLines(text.replace(/\n$/, ""), now));
  let fd = openStateFile(path, STATE_APPEND_FLAGS);
  try {
    const size = fstatSync(fd).size;
    if (size > 0 && size + bytes.byteLength > limits.maxBytes) {
      closeSync(fd);
      fd = -1;
      rotate(path, limits.keep);
      fd = openStateFile(path, STATE_APPEND_FLAGS);
    }
    let offset = 0;
    while (offset < bytes.byteLength) offset += writeSync(fd, bytes, offset);
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** True when this process's stdout (or descriptor `fd`) is the log file itself (launched as a daemon, not run in a terminal). */
export function stdoutIsLog(path: string, fd = 1): boolean {
  try {
    const out = fstatSync(fd);
    const log = statSync(path);
    return out.ino === log.ino && out.dev === log.dev;
  } catch {
    return false;
  }
}

/**
 * Routes this process's stdout and stderr as berth writes them (writeOutput,
 * src/stdio.ts) through `appendLog`, line by line; the limits are re-read with
 * `readLimits` at most every LIMITS_REFRESH_MS. `process.stdout`/`stderr`
 * are deliberately left alone: touching either makes Bun build both Node
 * streams (so does defining a property on `process`), ~2.4 MB of a daemon's
 * idle RSS (bench/README.md); no berth code writes through them
 * (test/daemon-output.test.ts keeps it so), and like `console.*` they would
 * still reach the log, only unstamped.
 */
export function captureStdio(path: string, readLimits: () => LogLimits, current?: LogLimits, fds?: readonly number[]): void {
  let partial = "";
  // `current`: the limits the daemon has just read with its settings, so its first line reads nothing more.
  let cached: { limits: LogLimits; at: number } | undefined = current ? { limits: current, at: Date.now() } : undefined;
  const limits = () => {
    if (!cached || Date.now() - cached.at > LIMITS_REFRESH_MS) cached = { limits: readLimits(), at: Date.now() };
    return cached.limits;
  };
  routeOutput((text) => {
    partial += text;
    const end = partial.lastIndexOf("\n");
    if (end >= 0 || partial.length > PARTIAL_LINE_MAX_BYTES) {
      const whole = end >= 0 ? partial.slice(0, end) : partial;
      partial = end >= 0 ? partial.slice(end + 1) : "";
      try {
        appendLog(path, whole, limits());
      } catch {
        // a full disk must not take the daemon down
      }
    }
    return true;
  }, fds);
}
