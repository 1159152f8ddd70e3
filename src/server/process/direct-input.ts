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
import { API_NOT_FOUND, ApiError } from "../api/types.ts";

/**
 * Input written to a process and not yet taken by it (kept by berth, or by Bun
 * where berth does not write it itself); past this much a process/write is
 * refused with -32001 (the client waits and retries), so a process that never
 * reads its input cannot make the server grow.
 */
export const MAX_PENDING_INPUT_BYTES = 4 * 1024 * 1024;
/** Ctrl-D: what closeStdin types into a terminal. */
export const EOT = new Uint8Array([4]);
/**
 * What the process did not take is offered again on the event loop's next turn while it takes some (a
 * fast reader empties a pipe or pty within microseconds: a timer there cut a 32 MiB paste's speed by 10);
 * after INPUT_SPIN_TRIES turns without a byte taken, after a wait from INPUT_RETRY_FIRST_MS doubling up to
 * INPUT_RETRY_MAX_MS (a process that reads nothing costs ten wake-ups a second).
 */
const INPUT_SPIN_TRIES = 16;
const INPUT_RETRY_FIRST_MS = 1;
export const INPUT_RETRY_MAX_MS = 100;

/** Linux: a pipe for a child's stdin (`read`, handed to Bun.spawn then closed here) whose `write` end is ours and non-blocking. */
export function openStdinPipe(): { read: number; write: number } | undefined {
  return process.platform === "linux" ? nonBlockingPipe() : undefined;
}

/** Input queued in order; `pending` is exactly what the process has not taken yet. */
export class DirectInput {
  private chunks: Uint8Array[] = [];
  pending = 0;
  /** Cancels the next offer, while one is scheduled. */
  private scheduled: (() => void) | undefined;
  /** Offers in a row that the process took nothing of. */
  private idleTries = 0;
  private closed = false;
  /** Closed once what waits is written (stdin closed: the process reads EOF after its input). */
  private ending = false;
  /** Why writes are no longer taken: "closed" (closeStdin, or the process is gone) or the write's errno (EPIPE: the reader closed it). */
  private shut: string | undefined;

  /** `processId`: the process's, for the errors. */
  constructor(
    private readonly fd: number,
    private readonly processId: string,
  ) {}

  /**
   * Writes what the process takes now; the rest (copied) is offered again until it is taken. Throws -32004
   * (as for a process that exited) once none is taken: stdin closed, or the reader gone (this write found it).
   */
  write(data: Uint8Array): void {
    if (!this.closed && !this.ending && data.length > 0) {
      this.chunks.push(new Uint8Array(data));
      this.pending += data.length;
      if (this.scheduled === undefined) this.flush();
    }
    if (this.shut === "closed") throw new ApiError(API_NOT_FOUND, `process ${this.processId} takes no more input: its stdin was closed`);
    if (this.shut) throw new ApiError(API_NOT_FOUND, `process ${this.processId} takes no more input: it closed its stdin (${this.shut})`, { errno: this.shut });
  }

  private readonly flush = (): void => {
    this.scheduled = undefined;
    let took = false;
    while (this.chunks.length > 0) {
      const chunk = this.chunks[0] as Uint8Array;
      let written: number;
      try {
        written = writeSync(this.fd, chunk);
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (code === "EAGAIN" || code === "EINTR") break; // full: offered again below
        this.close(typeof code === "string" ? code : "closed"); // EIO, EPIPE: the terminal or the reader is gone, and its input with it
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
    this.idleTries = took ? 0 : this.idleTries + 1;
    if (this.chunks.length === 0) {
      if (this.ending) this.close();
      return;
    }
    if (this.idleTries <= INPUT_SPIN_TRIES) {
      const turn = setImmediate(this.flush);
      this.scheduled = () => clearImmediate(turn);
    } else {
      const timer = setTimeout(this.flush, Math.min(INPUT_RETRY_MAX_MS, INPUT_RETRY_FIRST_MS * 2 ** (this.idleTries - INPUT_SPIN_TRIES - 1)));
      this.scheduled = () => clearTimeout(timer);
    }
  };

  /** After what waits is written, the descriptor is closed (a pipe's reader then reads EOF). */
  end(): void {
    this.ending = true;
    this.shut ??= "closed";
    if (this.chunks.length === 0) this.close();
  }

  /** Stops for good (the process is gone): what waits is dropped, the descriptor closed. */
  close(why = "closed"): void {
    if (this.closed) return;
    this.closed = true;
    this.shut ??= why;
    this.scheduled?.();
    this.scheduled = undefined;
    this.chunks = [];
    this.pending = 0;
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}
