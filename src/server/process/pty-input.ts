/**
 * A terminal process's input, written by berth itself to its pseudo-terminal's
 * master (Linux), so the bound on unread input (managed.ts
 * MAX_PENDING_INPUT_BYTES) counts exactly what the terminal has not taken.
 * Bun.Terminal.write takes any amount and says only `drain`, which Bun 1.4.5
 * does not always send (never after 4096-byte writes, measured): a count kept
 * from it only grew. A process that had read every byte of 4 MiB sent in
 * 4 KiB writes was refused input for good, and a slow reader was refused until
 * its whole backlog was read, not as it made room.
 *
 * The master is found by the pty index of the child's controlling terminal
 * (/proc/<pid>/stat) among this process's /dev/ptmx descriptors (their fdinfo
 * names the index), and duplicated: the copy stays valid, and ours, whatever
 * Bun does with its own. Anywhere a step fails: undefined, and Bun's writer is
 * used as before.
 */
import { closeSync, readdirSync, readFileSync, readlinkSync, writeSync } from "node:fs";
import { duplicateFd } from "../../platform/ffi.ts";

/** First wait before offering the terminal what it did not take; doubled while it takes nothing, up to PTY_RETRY_MAX_MS. */
const PTY_RETRY_FIRST_MS = 2;
export const PTY_RETRY_MAX_MS = 100;
const UNIX98_PTY_SLAVE_MAJOR = 136;
const O_NONBLOCK = 0o4000;

/** Pure: the pty index of a `tty_nr` (field 7 of /proc/<pid>/stat), or undefined for anything but a Unix98 pty. */
export function ptyIndexOf(ttyNr: number): number | undefined {
  const major = (ttyNr >> 8) & 0xfff;
  const minor = (ttyNr & 0xff) | ((ttyNr >> 12) & 0xfff00);
  return ttyNr > 0 && major === UNIX98_PTY_SLAVE_MAJOR ? minor : undefined;
}

function ttyNrOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[4]);
}

/** The pty index of our descriptor `fd` when it is a non-blocking pty master; else undefined. */
function masterIndex(fd: number | string): number | undefined {
  try {
    if (!readlinkSync(`/proc/self/fd/${fd}`).endsWith("ptmx")) return undefined;
    const info = readFileSync(`/proc/self/fdinfo/${fd}`, "latin1");
    const index = /^tty-index:\s*(\d+)$/m.exec(info)?.[1];
    const flags = /^flags:\s*([0-7]+)$/m.exec(info)?.[1];
    // A blocking master would stop the event loop on a full terminal.
    return index !== undefined && flags !== undefined && (parseInt(flags, 8) & O_NONBLOCK) !== 0 ? Number(index) : undefined;
  } catch {
    return undefined;
  }
}

/** Right after Bun spawned `childPid` on a terminal: a writer of its input, or undefined (then Bun's is used). */
export function openPtyInput(childPid: number): PtyInput | undefined {
  if (process.platform !== "linux") return undefined;
  try {
    const index = ptyIndexOf(ttyNrOf(childPid));
    if (index === undefined) return undefined;
    for (const fd of readdirSync("/proc/self/fd")) {
      if (masterIndex(fd) !== index) continue;
      const copy = duplicateFd(Number(fd));
      if (copy === undefined) return undefined;
      // The copy is checked too: `fd` could have been closed and reused between the look and the copy.
      if (masterIndex(copy) === index) return new PtyInput(copy);
      closeSync(copy);
    }
  } catch {
    // no /proc: Bun's writer
  }
  return undefined;
}

/** Input queued in order; `pending` is exactly what the terminal has not taken yet. */
export class PtyInput {
  private chunks: Uint8Array[] = [];
  pending = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private delayMs = PTY_RETRY_FIRST_MS;
  private closed = false;

  constructor(private readonly fd: number) {}

  /** Writes what the terminal takes now; the rest (copied) is offered again until it is taken. */
  write(data: Uint8Array): void {
    if (this.closed || data.length === 0) return;
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
        this.close(); // EIO, EBADF: the terminal is gone, and its input with it
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
      this.delayMs = PTY_RETRY_FIRST_MS;
      return;
    }
    this.delayMs = took ? PTY_RETRY_FIRST_MS : Math.min(PTY_RETRY_MAX_MS, this.delayMs * 2);
    this.timer = setTimeout(this.flush, this.delayMs);
  };

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
