/**
 * A terminal process's input, written by berth itself to its pseudo-terminal's
 * master (Linux, direct-input.ts), so the bound on unread input
 * (MAX_PENDING_INPUT_BYTES) counts exactly what the terminal has not taken.
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
import { closeSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { duplicateFd } from "../../platform/ffi.ts";
import { DirectInput } from "./direct-input.ts";

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
export function openPtyInput(childPid: number, processId: string): DirectInput | undefined {
  if (process.platform !== "linux") return undefined;
  try {
    const index = ptyIndexOf(ttyNrOf(childPid));
    if (index === undefined) return undefined;
    for (const fd of readdirSync("/proc/self/fd")) {
      if (masterIndex(fd) !== index) continue;
      const copy = duplicateFd(Number(fd));
      if (copy === undefined) return undefined;
      // The copy is checked too: `fd` could have been closed and reused between the look and the copy.
      if (masterIndex(copy) === index) return new DirectInput(copy, processId);
      closeSync(copy);
    }
  } catch {
    // no /proc: Bun's writer
  }
  return undefined;
}
