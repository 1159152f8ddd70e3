/**
 * `berth logs`: the last lines of the app-server's (or the updater's) log,
 * and `--follow`, which keeps reading across rotations.
 */
import { closeSync, fstatSync, lstatSync, readSync } from "node:fs";
import { BerthError, isBerthError } from "../errors.ts";
import { openExistingStateFile } from "../platform/fs.ts";
import type { Context } from "./context.ts";

export const LOGS_DEFAULT_LINES = 50;
export const LOGS_MAX_LINES = 10_000;
/** `logs -n N` reads at most this much from the end of a log. */
const TAIL_MAX_BYTES = 4 * 1024 * 1024;
/** `--follow` looks for new lines this often. */
export const FOLLOW_POLL_MS = 200;
/** A line without its newline yet is emitted once it grows past this. */
const FOLLOW_PARTIAL_MAX_BYTES = 64 * 1024;
const FOLLOW_CHUNK_BYTES = 64 * 1024;

export type LogsResult = { status: "logs"; path: string; lines: string[] };

/** Pure: the last `n` complete lines of `text` (a trailing newline ends the last line). */
export function lastLines(text: string, n: number): string[] {
  if (n <= 0 || text === "") return [];
  const lines = text.replace(/\n$/, "").split("\n");
  return lines.slice(-n);
}

export function parseLineCount(value: string | undefined): number {
  if (value === undefined) return LOGS_DEFAULT_LINES;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > LOGS_MAX_LINES) {
    throw new BerthError("USAGE", `-n takes a whole number of lines from 0 to ${LOGS_MAX_LINES}, got ${JSON.stringify(value)}.`);
  }
  return n;
}

/** Where a read ended, with the file still open: `--follow` carries on from exactly there, even if the log rotates meanwhile. */
export type LogCursor = { fd: number; position: number };

/**
 * Opened as every state file is (openStateFile): a symlink, FIFO or device planted at a log's path is
 * UNSAFE_STATE, never followed, waited on (a FIFO without a writer) or read for ever (/dev/zero).
 */
function readTail(path: string, keepOpen: boolean): { text: string; cursor?: LogCursor } {
  let fd: number | undefined;
  try {
    fd = openExistingStateFile(path);
  } catch (error) {
    if (isBerthError(error)) throw error;
    throw new BerthError("STATE_CORRUPT", `cannot read ${path}: ${(error as Error).message}.`);
  }
  if (fd === undefined) return { text: "" };
  try {
    const { size } = fstatSync(fd);
    const length = Math.min(size, TAIL_MAX_BYTES);
    const buffer = Buffer.alloc(length);
    let read = 0;
    while (read < length) {
      const got = readSync(fd, buffer, read, length - read, size - length + read);
      if (got === 0) break;
      read += got;
    }
    const text = buffer.subarray(0, read).toString("utf8");
    // Started mid-line: drop the partial first line.
    return { text: length < size ? text.slice(text.indexOf("\n") + 1) : text, ...(keepOpen ? { cursor: { fd, position: size } } : {}) };
  } finally {
    if (!keepOpen) closeSync(fd);
  }
}

export function logPathOf(ctx: Context, updater: boolean): string {
  return updater ? ctx.layout.updaterLog : ctx.layout.appServerLog;
}

export function readLogs(ctx: Context, options: { updater: boolean; lines: number; follow?: boolean }): { result: LogsResult; cursor?: LogCursor } {
  const path = logPathOf(ctx, options.updater);
  const { text, cursor } = readTail(path, options.follow === true);
  let lines = lastLines(text, options.lines);
  // Just rotated: the rest of the last N lines are at the end of the newest rotated file.
  if (lines.length < options.lines) lines = [...lastLines(readTail(`${path}.1`, false).text, options.lines - lines.length), ...lines];
  return { result: { status: "logs", path, lines }, ...(cursor ? { cursor } : {}) };
}

/**
 * Emits each new complete line appended to `path` after this call, until
 * `emit` throws (the reader went away) or the process is interrupted. When
 * the log is rotated, the old file is drained before the new one is opened.
 */
export async function followLog(path: string, from: LogCursor | undefined, emit: (line: string) => Promise<void>): Promise<void> {
  let fd: number | undefined = from?.fd;
  let position = from?.position ?? 0;
  let partial = "";
  /** Opens the (new) log, read from its start; a missing or unsafe one (see readTail) is waited out, never read. */
  const open = () => {
    try {
      fd = openExistingStateFile(path);
      position = 0;
    } catch {
      fd = undefined;
    }
  };
  const drain = async () => {
    if (fd === undefined) return;
    const buffer = Buffer.alloc(FOLLOW_CHUNK_BYTES);
    for (;;) {
      const got = readSync(fd, buffer, 0, buffer.length, position);
      if (got === 0) break;
      position += got;
      partial += buffer.subarray(0, got).toString("utf8");
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      if (partial.length > FOLLOW_PARTIAL_MAX_BYTES) {
        lines.push(partial);
        partial = "";
      }
      for (const line of lines) await emit(line);
    }
  };
  if (fd === undefined) open();
  for (;;) {
    await drain();
    let current: { ino: number; size: number } | undefined;
    try {
      // lstat: what sits at the path itself (a link planted there is not followed to what it names).
      current = lstatSync(path);
    } catch {
      current = undefined;
    }
    const mine = fd === undefined ? undefined : fstatSync(fd);
    if (current && (!mine || mine.ino !== current.ino || current.size < position)) {
      // Rotated (or truncated): finish the old file, then read the new one from its start.
      await drain();
      if (fd !== undefined) closeSync(fd);
      open();
      // Opened: read it now. Not opened (unsafe, or gone again): wait as for a missing log.
      if (fd !== undefined) continue;
    }
    await Bun.sleep(FOLLOW_POLL_MS);
  }
}
