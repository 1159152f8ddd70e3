/**
 * Keystrokes and pastes on their way to a remote process (`remote shell`,
 * `remote attach` of a terminal): an ordered queue with one `process/write`
 * in flight, so bytes reach the process in the order they were typed.
 *
 * The app-server refuses a write with -32001 while the process has more than
 * 4 MiB of input it has not read (and says nothing when room comes back), so
 * a refused write is offered again — the same bytes, or a prefix of them, in
 * order — after a backoff of at most INPUT_RETRY_MAX_DELAY_MS. While writes
 * are refused or the queue holds INPUT_QUEUE_MAX_BYTES, `push` returns a
 * promise: the caller stops reading its input until it settles. Nothing is
 * dropped silently: after INPUT_STALL_NOTICE_MS of refusals the user is told
 * their input is held; after INPUT_STALL_MAX_MS the pump gives up and says
 * how many bytes were not delivered (the follower then detaches and the
 * command exits 1).
 *
 * Exactly once across reconnects: each write carries this pump's random
 * `writer` id and a `seq` that grows with each distinct chunk. A write whose
 * answer was lost with its connection may have been applied, so it is sent
 * again on the next connection with the same seq and the same bytes, and the
 * host answers a seq it already applied as done without writing it twice
 * (server/process/write-seqs.ts). A refused write was not applied: its retry
 * keeps its seq but may carry fewer bytes, unless an unanswered send of it
 * may still arrive (then its bytes stay as they were).
 */
import { RpcError, type Connection } from "./connection.ts";

/** Queued input past which the caller is asked to stop reading (a promise from `push`). */
export const INPUT_QUEUE_MAX_BYTES = 1024 * 1024;
/** A caller that keeps pushing past this, ignoring the promise, is a bug: the pump gives up rather than grow. */
export const INPUT_QUEUE_HARD_MAX_BYTES = 4 * INPUT_QUEUE_MAX_BYTES;
/** The most one process/write carries (its base64 stays far under the 1 MiB frame limit). */
export const INPUT_WRITE_MAX_BYTES = 256 * 1024;
/**
 * A refused write is retried with half the bytes, down to this: a slow reader makes room a little at a time,
 * and any byte it takes counts as taken (the give-up is for a process that takes nothing, not a slow one).
 */
export const INPUT_WRITE_MIN_BYTES = 1;
const INPUT_RETRY_FIRST_DELAY_MS = 20;
/** Longest wait between two offers of refused input. */
export const INPUT_RETRY_MAX_DELAY_MS = 500;
/** Refused this long: the user is told their input is held, not lost. */
export const INPUT_STALL_NOTICE_MS = 5_000;
/** Refused this long without a single byte taken: give up, loudly. */
export const INPUT_STALL_MAX_MS = 60_000;
/** -32001: a limit was hit (for process/write: the process's unread input). */
const API_LIMIT = -32001;

export type InputLimits = { stallNoticeMs: number; stallMaxMs: number; queueMaxBytes: number };
export const defaultInputLimits = (): InputLimits => ({
  stallNoticeMs: INPUT_STALL_NOTICE_MS,
  stallMaxMs: INPUT_STALL_MAX_MS,
  queueMaxBytes: INPUT_QUEUE_MAX_BYTES,
});

/** Pure: the wait before offering refused input again (0-based attempt): 20, 40, 80 … capped at 500 ms. */
export function inputRetryDelayMs(attempt: number): number {
  return Math.min(INPUT_RETRY_MAX_DELAY_MS, INPUT_RETRY_FIRST_DELAY_MS * 2 ** Math.max(0, attempt));
}

/** Pure: the size of the next write: halved after a refusal, doubled after a success, within the bounds. */
export function nextWriteBytes(current: number, refused: boolean): number {
  return refused ? Math.max(INPUT_WRITE_MIN_BYTES, Math.floor(current / 2)) : Math.min(INPUT_WRITE_MAX_BYTES, current * 2);
}

/** What a failed process/write means for the bytes it carried. */
export type WriteFailure = "refused" | "rejected" | "unanswered";

/** Pure: -32001 → offer again later; any other answer of the server (the process ended) → never taken; no answer → send again. */
export function classifyWriteFailure(error: unknown): WriteFailure {
  if (error instanceof RpcError) return error.code === API_LIMIT ? "refused" : "rejected";
  return "unanswered";
}

/** Input bytes in order; a copy of each chunk is kept (a caller may reuse its buffer). */
export class InputQueue {
  private chunks: Uint8Array[] = [];
  bytes = 0;

  push(data: Uint8Array): void {
    if (data.length === 0) return;
    this.chunks.push(new Uint8Array(data));
    this.bytes += data.length;
  }

  /** The first `max` bytes (or all), joined; they stay queued until `shift`. */
  peek(max: number): Uint8Array {
    const first = this.chunks[0];
    if (!first) return new Uint8Array(0);
    if (first.length >= max || this.chunks.length === 1) return first.subarray(0, max);
    const out = new Uint8Array(Math.min(max, this.bytes));
    let at = 0;
    for (const chunk of this.chunks) {
      const part = chunk.subarray(0, out.length - at);
      out.set(part, at);
      at += part.length;
      if (at === out.length) break;
    }
    return out;
  }

  /** Drops the first `count` bytes (they were delivered). */
  shift(count: number): void {
    this.bytes -= count;
    while (count > 0) {
      const first = this.chunks[0] as Uint8Array;
      if (first.length > count) {
        this.chunks[0] = first.subarray(count);
        return;
      }
      count -= first.length;
      this.chunks.shift();
    }
  }

  /** Empties the queue; returns how many bytes it held. */
  clear(): number {
    const bytes = this.bytes;
    this.chunks = [];
    this.bytes = 0;
    return bytes;
  }
}

export type InputTarget = {
  /** The connection and process to write to now (`label`: its name for messages); undefined while there is none (the follower reconnects, then calls `kick`). */
  current(): { conn: Connection; processId: string; label: string } | undefined;
  onNotice(text: string): void;
  /** The pump stopped for good with `undelivered` bytes still queued; they will not be sent. */
  onGiveUp(reason: string, undelivered: number): void;
};

/** The chunk being written: its seq, its bytes, and whether they are fixed (a send of it went unanswered: it may have been applied). */
type PendingWrite = { seq: number; bytes: Uint8Array; pinned: boolean };

/** Pure: the next chunk to send: the pinned one again, else the queue's head under the pending seq (a refused write keeps it) or the next. */
export function nextPendingWrite(pending: PendingWrite | undefined, lastSeq: number, head: () => Uint8Array): PendingWrite {
  if (pending?.pinned) return pending;
  return { seq: pending?.seq ?? lastSeq + 1, bytes: head(), pinned: false };
}

type Waiter = { promise: Promise<void>; resolve(): void };
const waiter = (): Waiter => {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
};

/** The queue and its one writer. `delivered` counts the bytes the server took. */
export class InputPump {
  private readonly queue = new InputQueue();
  private running = false;
  private stopped = false;
  private refusedSince: number | undefined;
  private noticed = false;
  private writeBytes = INPUT_WRITE_MAX_BYTES;
  private room: Waiter | undefined;
  private idle: Waiter | undefined;
  /** This pump's id in process/write (the host keeps the highest seq it applied per writer). */
  private readonly writer = Buffer.from(crypto.getRandomValues(new Uint8Array(12))).toString("base64url");
  private pending: PendingWrite | undefined;
  private lastSeq = 0;
  delivered = 0;

  constructor(
    private readonly target: InputTarget,
    private readonly limits: InputLimits = defaultInputLimits(),
  ) {}

  /** True while the host refuses the input (the process reads none of it). */
  get refusing(): boolean {
    return this.refusedSince !== undefined;
  }

  private get holding(): boolean {
    return !this.stopped && (this.queue.bytes >= this.limits.queueMaxBytes || this.refusedSince !== undefined);
  }

  /** Queues `data`; a returned promise means: read no more input until it settles. */
  push(data: Uint8Array): Promise<void> | undefined {
    if (this.stopped || data.length === 0) return undefined;
    this.queue.push(data);
    if (this.queue.bytes > INPUT_QUEUE_HARD_MAX_BYTES) {
      this.giveUp(`input kept coming past ${INPUT_QUEUE_HARD_MAX_BYTES} queued bytes though reading it was held`);
      return undefined;
    }
    this.kick();
    if (!this.holding) return undefined;
    this.room ??= waiter();
    return this.room.promise;
  }

  /** Starts the writer unless it runs (after a re-attach: what waited goes first). */
  kick(): void {
    if (!this.running && !this.stopped && this.queue.bytes > 0) void this.run();
  }

  /** Resolves true once everything queued was delivered, false past `timeoutMs` or when stopped first. */
  async flushed(timeoutMs: number): Promise<boolean> {
    if (this.queue.bytes === 0 && !this.running) return true;
    this.idle ??= waiter();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await Promise.race([this.idle.promise, late]);
    clearTimeout(timer);
    return this.queue.bytes === 0 && !this.running;
  }

  /** Stops for good; returns the bytes that were not delivered. Waiters are released. */
  stop(): number {
    this.stopped = true;
    this.pending = undefined;
    const undelivered = this.queue.clear();
    this.settle();
    return undelivered;
  }

  private settle(): void {
    if (!this.holding && this.room) {
      this.room.resolve();
      this.room = undefined;
    }
    if ((this.stopped || (this.queue.bytes === 0 && !this.running)) && this.idle) {
      this.idle.resolve();
      this.idle = undefined;
    }
  }

  private giveUp(reason: string): void {
    const undelivered = this.stop();
    this.target.onGiveUp(reason, undelivered);
  }

  private async run(): Promise<void> {
    this.running = true;
    let attempt = 0;
    try {
      while (!this.stopped && this.queue.bytes > 0) {
        const live = this.target.current();
        if (!live) return; // offline: the follower kicks again after the re-attach
        const chunk = nextPendingWrite(this.pending, this.lastSeq, () => this.queue.peek(this.writeBytes));
        this.pending = chunk;
        this.lastSeq = chunk.seq;
        const params = { processId: live.processId, writer: this.writer, seq: chunk.seq };
        const failure = await live.conn.callData("process/write", params, chunk.bytes).then(
          () => undefined,
          (error: unknown) => error,
        );
        if (this.stopped) return;
        if (failure === undefined) {
          // Written now, or (`duplicate`) by an earlier send whose answer was lost: taken either way.
          this.pending = undefined;
          this.accepted(chunk.bytes.length);
          attempt = 0;
          continue;
        }
        const kind = classifyWriteFailure(failure);
        // The process ended (its process/exited follows and ends the follower with its status): what waits cannot be delivered.
        if (kind === "rejected") {
          this.pending = undefined;
          this.target.onNotice(`${this.queue.clear()} bytes of input were not delivered: ${(failure as Error).message}`);
          continue;
        }
        if (kind === "unanswered") chunk.pinned = true;
        if (kind === "refused" && !(await this.refused(live.label, attempt))) return;
        // Unanswered: a dead connection is noticed at the loop's top; a live one that timed out gets the same bytes again.
        if (kind === "unanswered" && !live.conn.isClosed) await Bun.sleep(inputRetryDelayMs(attempt));
        attempt += 1;
      }
    } finally {
      this.running = false;
      this.settle();
    }
  }

  private accepted(count: number): void {
    this.queue.shift(count);
    this.delivered += count;
    this.writeBytes = nextWriteBytes(this.writeBytes, false);
    if (this.noticed) this.target.onNotice("the remote process reads its input again; the held input follows");
    this.refusedSince = undefined;
    this.noticed = false;
    this.settle();
  }

  /** A -32001: waits before the next offer; false when the deadline passed (the pump gave up). */
  private async refused(label: string, attempt: number): Promise<boolean> {
    const now = Date.now();
    this.refusedSince ??= now;
    this.writeBytes = nextWriteBytes(this.writeBytes, true);
    const waited = now - this.refusedSince;
    if (waited >= this.limits.stallMaxMs) {
      this.giveUp(`${label} has read none of its input for ${Math.round(waited / 1000)} s`);
      return false;
    }
    if (waited >= this.limits.stallNoticeMs && !this.noticed) {
      this.noticed = true;
      this.target.onNotice(
        `${label} has not read its input for ${Math.round(waited / 1000)} s; ${this.queue.bytes} bytes of yours are held, in order (berth gives up after ${Math.round(this.limits.stallMaxMs / 1000)} s)`,
      );
    }
    await Bun.sleep(Math.min(inputRetryDelayMs(attempt), this.limits.stallMaxMs - waited));
    return true;
  }
}
