/**
 * Pure pieces of resuming a process's output across reconnects: which bytes
 * of an output notification are new, and how long to wait between tries.
 */

/** Tracks, per stream, the offset of the next byte not yet delivered. */
export class OffsetTracker {
  private readonly next = new Map<string, number>();

  /** `since` for process/attach: everything delivered so far, per stream. */
  since(): Record<string, number> {
    return Object.fromEntries(this.next);
  }

  get(stream: string): number | undefined {
    return this.next.get(stream);
  }

  /**
   * Accepts `data` that starts at `offset` of `stream`; returns the part not
   * delivered before (possibly empty) and how many bytes were lost in a gap
   * (the server no longer kept them).
   */
  accept(stream: string, offset: number, data: Uint8Array): { fresh: Uint8Array; lost: number } {
    const next = this.next.get(stream);
    if (next === undefined || offset >= next) {
      this.next.set(stream, offset + data.length);
      return { fresh: data, lost: next === undefined ? 0 : offset - next };
    }
    const end = offset + data.length;
    if (end <= next) return { fresh: data.subarray(data.length), lost: 0 };
    this.next.set(stream, end);
    return { fresh: data.subarray(next - offset), lost: 0 };
  }

  /** True when every stream has been delivered up to `ends` (a process's `streams[s].end`). */
  reached(ends: Record<string, number>): boolean {
    return Object.entries(ends).every(([stream, end]) => end === 0 || (this.next.get(stream) ?? 0) >= end);
  }
}

/** Longest wait between reconnect tries (the issue: at most 10 s). */
export const RECONNECT_MAX_DELAY_MS = 10_000;
const RECONNECT_FIRST_DELAY_MS = 250;

/** Pure: the wait before reconnect try `attempt` (0-based): 0, 250 ms, 500 ms, 1 s … capped at 10 s. */
export function reconnectDelayMs(attempt: number): number {
  if (attempt <= 0) return 0;
  return Math.min(RECONNECT_MAX_DELAY_MS, RECONNECT_FIRST_DELAY_MS * 2 ** (attempt - 1));
}

/** The documented detach key of `remote shell`: Ctrl-\ (0x1c), as dtach. BERTH_DETACH_KEY=^X picks another, `none` disables. */
export const DEFAULT_DETACH_KEY = 0x1c;

/** Pure: `^\`, `^]`, `^A`… → the control byte; `none` → undefined. */
export function parseDetachKey(text: string | undefined): number | undefined {
  if (text === undefined || text === "") return DEFAULT_DETACH_KEY;
  if (text === "none") return undefined;
  const match = /^\^([@A-Za-z[\\\]^_])$/.exec(text);
  if (!match) throw new Error(`BERTH_DETACH_KEY must look like ^\\ or ^A, or be none; got ${JSON.stringify(text)}`);
  return (match[1] as string).toUpperCase().charCodeAt(0) ^ 0x40;
}

/** Pure: splits keyboard input at the detach key: what to send, and whether to detach after it. */
export function splitAtDetachKey(input: Uint8Array, key: number | undefined): { send: Uint8Array; detach: boolean } {
  const at = key === undefined ? -1 : input.indexOf(key);
  return at < 0 ? { send: input, detach: false } : { send: input.subarray(0, at), detach: true };
}
