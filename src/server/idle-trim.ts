/**
 * Idle trim: once the app-server has been quiet for `idleTrimAfterMs`, it
 * unmaps the clean pages of its own executable from itself with
 * madvise(MADV_DONTNEED).
 *
 * Most of an idle app-server's RSS is not memory it owns: it is pages of the
 * berth executable (RssFile) that start-up and the first use of each code
 * path touched once. For a read-only private file mapping with no private
 * copies, MADV_DONTNEED only drops this process's page-table entries: the
 * pages stay in the page cache (shared with the keeper, the next CLI and
 * every other process mapping the file) and the next touch maps them again
 * with a minor fault, no disk read. MADV_PAGEOUT would evict them from the
 * cache instead (the next `berth status` would read the binary from disk).
 * The bytes read back are the same: the kernel refuses writes to a running
 * executable (ETXTBSY), and an update renames a new file over the path,
 * leaving this inode as it was.
 *
 * What is trimmed, and why nothing else (`trimmableRanges`):
 * - only mappings of this very executable (same device and inode as
 *   /proc/self/exe, and the same path, " (deleted)" included after an update
 *   renamed a new release over it): libc and the loader are other people's
 *   files, and the vdso is not a file;
 * - only mappings without write permission: a writable private mapping's
 *   pages are (or may become, on another thread, at any moment) private copies;
 * - only mappings whose smaps says "Anonymous: 0 kB" and "Swap: 0 kB": a
 *   page the loader relocated (.data.rel.ro, made read-only again after
 *   start) is a private copy, and DONTNEED would replace it with the file's
 *   unrelocated bytes: a crash later. Swapped out, that copy leaves
 *   Anonymous and shows in Swap, and DONTNEED frees its swap entry just the
 *   same;
 * - never an anonymous mapping (heap, JIT code): DONTNEED would zero it.
 *
 * When (`idleTrimStep`): QUIET_MS after the last client event (connection,
 * request, byte sent or received), at most once per quiet period. While idle
 * nothing is scheduled: the one-shot timer is armed by the first event after
 * a trim, and at most re-armed once per quiet period while clients are busy.
 */
import { closeSync, readlinkSync, readSync, statSync } from "node:fs";
import { openStateFile, STATE_READ_FLAGS } from "../platform/fs.ts";
import { MAX_TIMER_MS } from "../timers.ts";

/**
 * Most smaps read: ~1 kB per mapping, so ~4000 mappings (an app-server has a
 * few hundred). A process with more skips the trim rather than hold the event
 * loop reading up to max_map_count (65530) of them.
 */
export const SMAPS_MAX_BYTES = 4 * 1024 * 1024;
const SMAPS_PATH = "/proc/self/smaps";
const READ_CHUNK_BYTES = 64 * 1024;

export type ExecutableIdentity = { major: number; minor: number; inode: bigint; path: string };
export type Range = { start: bigint; end: bigint; rssKb: number };

const HEADER = /^([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) (\d+)(?: +(.*))?$/;

/** The mappings of `exe` in smaps text that can be trimmed safely (see the module comment for each rule). */
export function trimmableRanges(smaps: string, exe: ExecutableIdentity): Range[] {
  const ranges: Range[] = [];
  let current: { range: Range; eligible: boolean; anonymousKb?: number; swapKb?: number } | undefined;
  const finish = () => {
    // A mapping whose smaps has no Anonymous or Swap line is not known to be clean: left alone.
    if (current?.eligible && current.anonymousKb === 0 && current.swapKb === 0 && current.range.rssKb > 0) ranges.push(current.range);
  };
  for (const line of smaps.split("\n")) {
    const header = HEADER.exec(line);
    if (header) {
      finish();
      const [, start, end, perms, major, minor, inode, path] = header as unknown as string[];
      const sameFile =
        BigInt(inode!) === exe.inode && exe.inode !== 0n && parseInt(major!, 16) === exe.major && parseInt(minor!, 16) === exe.minor && path === exe.path;
      current = { range: { start: BigInt(`0x${start}`), end: BigInt(`0x${end}`), rssKb: 0 }, eligible: sameFile && perms![1] === "-" };
      continue;
    }
    if (!current) continue;
    const field = /^(Rss|Anonymous|Swap):\s+(\d+) kB$/.exec(line);
    if (field?.[1] === "Rss") current.range.rssKb = Number(field[2]);
    else if (field?.[1] === "Anonymous") current.anonymousKb = Number(field[2]);
    else if (field?.[1] === "Swap") current.swapKb = Number(field[2]);
  }
  finish();
  return ranges;
}

/** Linux's st_dev encoding (glibc's gnu_dev_major/minor), as smaps prints it ("fe:01"). */
export function deviceNumbers(dev: bigint): { major: number; minor: number } {
  return {
    // glibc's masks are 32-bit (unsigned int): a major's high bits must not leak into the minor.
    major: Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n)),
    minor: Number((dev & 0xffn) | ((dev >> 12n) & 0xffffff00n)),
  };
}

/**
 * The text of `path` when it holds at most `maxBytes`, else undefined. Read
 * as it streams (a /proc file says size 0), never through a symlink, and only
 * from a regular file: a FIFO would block, /dev/zero would never end.
 */
export function readBoundedText(path: string, maxBytes: number): string | undefined {
  const fd = openStateFile(path, STATE_READ_FLAGS);
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, maxBytes + 1 - total));
      const read = readSync(fd, chunk, 0, chunk.length, null);
      if (read === 0) return Buffer.concat(chunks, total).toString("utf8");
      total += read;
      if (total > maxBytes) return undefined;
      chunks.push(chunk.subarray(0, read));
    }
  } finally {
    closeSync(fd);
  }
}

/** `skipped`: smaps was past its bound, so nothing was looked at this round. */
export type TrimReport = { ranges: number; rssKb: number; failed: number; skipped?: "smapsTooLarge" };

/** Trims this process's clean executable pages (Linux only; elsewhere reports nothing trimmed). */
export async function trimOwnExecutable(smapsMaxBytes = SMAPS_MAX_BYTES): Promise<TrimReport> {
  const report: TrimReport = { ranges: 0, rssKb: 0, failed: 0 };
  if (process.platform !== "linux") return report;
  // bigint: an inode number past 2^53 (btrfs, xfs) must not round onto another.
  const stat = statSync("/proc/self/exe", { bigint: true });
  const exe = { ...deviceNumbers(stat.dev), inode: stat.ino, path: readlinkSync("/proc/self/exe") };
  const smaps = readBoundedText(SMAPS_PATH, smapsMaxBytes);
  if (smaps === undefined) return { ...report, skipped: "smapsTooLarge" };
  const ranges = trimmableRanges(smaps, exe);
  if (ranges.length === 0) return report;
  // bun:ffi is loaded here, not at start: a server that never goes quiet never needs it.
  const { madviseDontNeed } = await import("../platform/ffi.ts");
  for (const range of ranges) {
    // EINVAL (e.g. a locked mapping) or EPERM on one mapping leaves it as it was; the others are still trimmed.
    const result = madviseDontNeed(range.start, range.end);
    if (result === "unsupported") return report;
    if (result === 0) {
      report.ranges += 1;
      report.rssKb += range.rssKb;
    } else report.failed += 1;
  }
  return report;
}

export type IdleTrimState = { now: number; lastActivityAt: number; quietMs: number; trimmedSinceActivity: boolean };

/** What the one-shot timer does when it fires: trim, wait for the rest of the quiet period, or stay unarmed. */
export function idleTrimStep(state: IdleTrimState): { action: "trim" } | { action: "wait"; ms: number } | { action: "none" } {
  if (state.quietMs <= 0 || state.trimmedSinceActivity) return { action: "none" };
  const quietFor = state.now - state.lastActivityAt;
  return quietFor >= state.quietMs ? { action: "trim" } : { action: "wait", ms: state.quietMs - quietFor };
}

// A longer quiet period is waited for in steps of MAX_TIMER_MS (idleTrimStep gives the rest at each firing).
export { MAX_TIMER_MS };

export type IdleTrimmer = {
  /** A client event: postpones the trim to QUIET_MS from now (cheap: one clock read, a timer armed only if none is). */
  touch(): void;
  dispose(): void;
};

/** `quietMs` ≤ 0 never trims. `trim` defaults to trimOwnExecutable. */
export function idleTrimmer(quietMs: number, trim: () => Promise<unknown> = trimOwnExecutable): IdleTrimmer {
  let lastActivityAt = performance.now();
  let trimmedSinceActivity = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let disposed = false;
  const arm = (ms: number) => {
    timer = setTimeout(fire, Math.min(ms, MAX_TIMER_MS));
    // The servers keep the process alive; this timer must never delay its exit.
    timer.unref();
  };
  const fire = () => {
    timer = undefined;
    if (disposed) return;
    const step = idleTrimStep({ now: performance.now(), lastActivityAt, quietMs, trimmedSinceActivity });
    if (step.action === "wait") arm(step.ms);
    else if (step.action === "trim") {
      trimmedSinceActivity = true;
      // A failure (no /proc, no libc) costs only the memory that would have been saved.
      trim().catch(() => {});
    }
  };
  if (quietMs > 0) arm(quietMs);
  return {
    touch() {
      lastActivityAt = performance.now();
      trimmedSinceActivity = false;
      if (!timer && !disposed && quietMs > 0) arm(quietMs);
    },
    dispose() {
      disposed = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}
