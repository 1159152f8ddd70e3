/**
 * A process's input written by berth itself, with non-blocking writes, to a
 * descriptor it owns: its terminal's master (pty-input.ts) or the write end of
 * its stdin pipe (openStdinPipe). `pending` is exactly what the process has not
 * taken yet, for the bound on unread input (managed.ts): Bun's writers keep
 * what the process does not take and report it only once all of it is gone, so
 * a count kept from them let a slow reader make no room until its whole
 * backlog was read.
 */
import { closeSync, writeSync } from "node:fs";
import { nonBlockingPipe } from "../../platform/ffi.ts";

/**
 * Input written to a process and not yet taken by it (kept by berth, or by Bun
 * where berth does not write it itself); past this much a process/write is
 * refused with -32001 (the client waits and retries), so a process that never
 * reads its input cannot make the server grow.
 */
export const MAX_PENDING_INPUT_BYTES = 4 * 1024 * 1024;
/** Ctrl-D: what closeStdin types into a terminal. */
export const EOT = new Uint8Array([4]);
/** First wait before offering the process what it did not take; doubled while it takes nothing, up to INPUT_RETRY_MAX_MS. */
const INPUT_RETRY_FIRST_MS = 2;
export const INPUT_RETRY_MAX_MS = 100;

/** Linux: a pipe for a child's stdin (`read`, handed to Bun.spawn then closed here) whose `write` end is ours and non-blocking. */
export function openStdinPipe(): { read: number; write: number } | undefined {
  return process.platform === "linux" ? nonBlockingPipe() : undefined;
}

/** Input queued in order; `pending` is exactly what the process has not taken yet. */
export class DirectInput {
  private chunks: Uint8Array[] = [];
  pending = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private delayMs = INPUT_RETRY_FIRST_MS;
  private closed = false;
  /** Closed once what waits is written (stdin closed: the process reads EOF after its input). */
  private ending = false;

  constructor(private readonly fd: number) {}

  /** Writes what the process takes now; the rest (copied) is offered again until it is taken. */
  write(data: Uint8Array): void {
    if (this.closed || this.ending || data.length === 0) return;
    this.chunks.push(new Uint8Array(data));
    this.pending += data.length;
    if (this.timer === undefined) this.flush();
  }

  private readonly flush = (): void => {
    this.timer = undefined;
    let took = false;
    while (this.chunks.length > 0) {
      const chunk = this.chunks[0] as Uint8Array;
      let written: number;
      try {
        written = writeSync(this.fd, chunk);
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (code === "EAGAIN" || code === "EINTR") break; // full: offered again below
        this.close(); // EIO, EPIPE: the terminal or the reader is gone, and its input with it
        return;
      }
      this.pending -= written;
      if (written > 0) took = true;
      if (written < chunk.length) {
        this.chunks[0] = chunk.subarray(written);
        break;
      }
      this.chunks.shift();
    }
    if (this.chunks.length === 0) {
      this.delayMs = INPUT_RETRY_FIRST_MS;
      if (this.ending) this.close();
      return;
    }
    this.delayMs = took ? INPUT_RETRY_FIRST_MS : Math.min(INPUT_RETRY_MAX_MS, this.delayMs * 2);
    this.timer = setTimeout(this.flush, this.delayMs);
  };

  /** After what waits is written, the descriptor is closed (a pipe's reader then reads EOF). */
  end(): void {
    this.ending = true;
    if (this.chunks.length === 0) this.close();
  }

  /** Stops for good (the process is gone): what waits is dropped, the descriptor closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.chunks = [];
    this.pending = 0;
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}
