/**
 * One process a session started: its rings, the connections attached to it,
 * and the only code that signals it. The process writes into its rings as
 * fast as it likes; attached connections are fed from the rings, so a slow
 * client never slows the process (its own connection is closed at the
 * backlog cap by serve.ts, and it re-attaches from its offsets).
 */
import type { Subprocess, Terminal } from "bun";
import type { ProcessEntry } from "../../platform/process.ts";
import { API_LIMIT, ApiError, type Conn } from "../api/types.ts";
import { EOT, MAX_PENDING_INPUT_BYTES, type DirectInput } from "./direct-input.ts";
import { ByteRing } from "./ring.ts";

/**
 * Output sent to a client in notifications of at most this many bytes (its
 * base64 plus the envelope stays well under the 1 MiB frame limit). Large
 * frames are what make throughput: each notification costs a JSON envelope,
 * a WebSocket frame, a bridge line and a client parse, whatever its size.
 */
export const OUTPUT_CHUNK_BYTES = 512 * 1024;
/**
 * Output is sent to a connection only while less than this is unsent on its
 * socket; the rest waits in the ring and follows on drain. So a slow client
 * costs the server at most about this much memory, never the process's speed.
 */
export const OUTPUT_PAUSE_BYTES = 1024 * 1024;
/**
 * A connection owed more than this (unsent on its socket plus produced and not
 * yet sent, across the streams it follows) is closed; the client re-attaches
 * from its offsets (spec: 8 MiB).
 */
export const MAX_OWED_BYTES = 8 * 1024 * 1024;
export const CLOSE_BACKLOG_CODE = 1008;
/** While output waits for a drain, the socket's backlog is also rechecked this often. */
const DRAIN_RECHECK_MS = 50;


/** After the process exits, its pipes or pty get this long to deliver their last bytes before `exited` is sent. */
export const OUTPUT_DRAIN_AFTER_EXIT_MS = 1_000;

export type StreamName = "stdout" | "stderr" | "terminal";
export type TerminalSize = { cols: number; rows: number };

export type ProcessInfo = {
  processId: string;
  name?: string;
  argv: string[];
  cwd: string;
  pid: number;
  terminal: TerminalSize | null;
  state: "running" | "exited";
  exitCode?: number | null;
  signal?: string | null;
  startedAt: string;
  exitedAt?: string;
  streams: Partial<Record<StreamName, { start: number; end: number }>>;
  attached: number;
};

/** Where one attached connection is in each stream: the next offset it has not been sent. */
type Subscriber = {
  conn: Conn;
  next: Map<StreamName, number>;
  ready: boolean;
  unsubscribe: () => void;
  /** Set while output waits for the socket to drain. */
  stopDrainWait?: () => void;
  /** The process exited; `process/exited` goes out once this subscriber has all the output. */
  exitPending?: boolean;
};

export class ManagedProcess {
  readonly rings = new Map<StreamName, ByteRing>();
  readonly startedAt = new Date().toISOString();
  exitedAt?: string;
  exitCode: number | null = null;
  signal: string | null = null;
  state: "running" | "exited" = "running";
  terminalSize: TerminalSize | null;
  proc!: Subprocess<"pipe" | "ignore", "pipe" | "ignore", "pipe" | "ignore">;
  terminal?: Terminal;
  /** Boot id + start time of the leader, taken right after the spawn (for the ledger). */
  identity?: string;
  /** What the leader left in its group when it was reaped (tree.ts leftBehind), ended when the server stops. */
  leftovers: ProcessEntry[] = [];
  private readonly subscribers = new Map<number, Subscriber>();
  /** Output arrived and subscribers have not been offered it yet (one pump per event-loop turn). */
  private pumpScheduled = false;
  /** Per attached connection: removes our hook from its close listeners. */
  private readonly closeHooks = new Map<number, () => void>();
  private readonly exitListeners: Array<() => void> = [];
  /** Bytes given to Bun for the process's input and not yet flushed to it (without `input`). */
  private pendingInput = 0;
  /** Linux: the process's input (pty or pipe), written by berth and counted exactly (direct-input.ts). */
  input?: DirectInput;

  constructor(
    readonly processId: string,
    readonly argv: string[],
    readonly cwd: string,
    readonly name: string | undefined,
    terminal: TerminalSize | undefined,
    scrollbackBytes: number,
  ) {
    this.terminalSize = terminal ?? null;
    const names: StreamName[] = terminal ? ["terminal"] : ["stdout", "stderr"];
    for (const stream of names) this.rings.set(stream, new ByteRing(Math.max(1, scrollbackBytes)));
  }

  get pid(): number {
    return this.proc.pid;
  }

  /** True until Bun has reaped the process: only then may its pid (and group) be signalled. */
  get unreaped(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  info(): ProcessInfo {
    const streams: ProcessInfo["streams"] = {};
    for (const [stream, ring] of this.rings) streams[stream] = { start: ring.start, end: ring.end };
    return {
      processId: this.processId,
      ...(this.name !== undefined ? { name: this.name } : {}),
      argv: this.argv,
      cwd: this.cwd,
      pid: this.proc.pid,
      terminal: this.terminalSize,
      state: this.state,
      ...(this.state === "exited" ? { exitCode: this.exitCode, signal: this.signal, exitedAt: this.exitedAt } : {}),
      startedAt: this.startedAt,
      streams,
      attached: this.subscribers.size,
    };
  }

  /** Output from the process: kept in the ring, then offered to every attached connection. */
  output(stream: StreamName, chunk: Uint8Array): void {
    this.rings.get(stream)?.append(chunk);
    // Chunks read in the same event-loop turn go out together: one larger
    // notification instead of one per pipe/pty read (setImmediate runs after
    // this turn's I/O callbacks, so a lone keystroke echo is not delayed).
    if (this.pumpScheduled || this.subscribers.size === 0) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      for (const sub of this.subscribers.values()) if (sub.ready) this.pumpAll(sub);
    });
  }

  /**
   * Attaches `conn` (again): replays from `since` (default each stream's
   * start) once the attach reply has gone out, then follows live output.
   */
  attach(conn: Conn, since: Partial<Record<string, number>> = {}): void {
    this.subscribers.get(conn.id)?.unsubscribe();
    const next = new Map<StreamName, number>();
    // An offset past the end (a client's mistake) would skip bytes silently: clamp it to the end.
    for (const [stream, ring] of this.rings) next.set(stream, Math.min(since[stream] ?? ring.start, ring.end));
    const sub: Subscriber = { conn, next, ready: false, unsubscribe: () => {} };
    let detached = false;
    sub.unsubscribe = () => {
      detached = true;
      sub.stopDrainWait?.();
      if (this.subscribers.get(conn.id) !== sub) return;
      this.subscribers.delete(conn.id);
      // Detached: the connection must no longer hold this process (and its rings) alive.
      this.closeHooks.get(conn.id)?.();
      this.closeHooks.delete(conn.id);
    };
    this.subscribers.set(conn.id, sub);
    // One close hook per connection, however often it re-attaches.
    if (!this.closeHooks.has(conn.id)) {
      this.closeHooks.set(
        conn.id,
        conn.onClose(() => {
          this.closeHooks.delete(conn.id);
          this.subscribers.get(conn.id)?.unsubscribe();
        }),
      );
    }
    // The reply to process/attach is sent after this handler returns; the replay follows it.
    setTimeout(() => {
      if (detached || conn.closed) return;
      sub.ready = true;
      sub.exitPending = this.state === "exited";
      this.pumpAll(sub);
    }, 0);
  }

  detach(conn: Conn): boolean {
    const sub = this.subscribers.get(conn.id);
    sub?.unsubscribe();
    return sub !== undefined;
  }

  /** The process is forgotten: detach every connection. */
  release(): void {
    for (const sub of [...this.subscribers.values()]) sub.unsubscribe();
  }

  isAttached(conn: Conn): boolean {
    return this.subscribers.has(conn.id);
  }

  private pumpAll(sub: Subscriber): void {
    for (const stream of this.rings.keys()) this.pump(sub, stream);
  }

  /**
   * Sends from the subscriber's offset towards the ring's end, in chunks, with
   * `truncated` where bytes were lost; stops while the socket holds
   * OUTPUT_PAUSE_BYTES (resuming on drain) and closes the connection once it
   * is owed more than MAX_OWED_BYTES.
   */
  private pump(sub: Subscriber, stream: StreamName): void {
    const ring = this.rings.get(stream);
    if (!ring || sub.conn.closed) return;
    if (sub.stopDrainWait) {
      // Waiting for the socket to drain: output stays in the ring, but the debt is capped.
      if (this.owed(sub) > MAX_OWED_BYTES) sub.conn.close?.(CLOSE_BACKLOG_CODE, "unsent backlog over 8 MiB; reconnect and re-attach from your offsets");
      return;
    }
    let from = sub.next.get(stream) ?? ring.start;
    while (from < ring.end && !sub.conn.closed && sub.conn.backlog() < OUTPUT_PAUSE_BYTES) {
      const read = ring.view(from, OUTPUT_CHUNK_BYTES);
      const params = { processId: this.processId, stream, offset: read.offset, ...(read.truncated ? { truncated: true } : {}) };
      sub.conn.notifyData("process/output", params, read.data);
      from = read.offset + read.data.length;
      sub.next.set(stream, from);
    }
    if (sub.conn.closed) return;
    if (from >= ring.end) {
      if (sub.exitPending && this.caughtUp(sub)) {
        sub.exitPending = false;
        this.sendExited(sub.conn);
      }
      return;
    }
    // Resume on Bun's drain; the recheck covers a drain that came before we listened.
    const resume = () => {
      sub.stopDrainWait?.();
      sub.stopDrainWait = undefined;
      this.pumpAll(sub);
    };
    const stopListening = sub.conn.onDrain(resume);
    const recheck = setInterval(() => {
      if (!sub.conn.closed && sub.conn.backlog() < OUTPUT_PAUSE_BYTES) resume();
    }, DRAIN_RECHECK_MS);
    recheck.unref?.();
    sub.stopDrainWait = () => {
      stopListening();
      clearInterval(recheck);
    };
  }

  private caughtUp(sub: Subscriber): boolean {
    for (const [stream, ring] of this.rings) if ((sub.next.get(stream) ?? ring.start) < ring.end) return false;
    return true;
  }

  /** Bytes this subscriber's connection is owed: unsent on its socket plus produced and not yet sent. */
  private owed(sub: Subscriber): number {
    let owed = sub.conn.backlog();
    for (const [stream, ring] of this.rings) owed += ring.end - (sub.next.get(stream) ?? ring.start);
    return owed;
  }

  private sendExited(conn: Conn): void {
    conn.notify("process/exited", { processId: this.processId, exitCode: this.exitCode, signal: this.signal });
  }

  /** Called once the process has exited and its output is drained. */
  markExited(exitCode: number | null, signal: string | null): void {
    this.state = "exited";
    this.exitCode = exitCode;
    this.signal = signal;
    this.exitedAt = new Date().toISOString();
    for (const sub of this.subscribers.values()) {
      if (!sub.ready) continue;
      sub.exitPending = true;
      this.pumpAll(sub);
    }
    for (const listener of this.exitListeners.splice(0)) listener();
  }

  onExit(listener: () => void): void {
    if (this.state === "exited") listener();
    else this.exitListeners.push(listener);
  }

  /** Signals the process group, only while the leader is still ours (not reaped). */
  signalGroup(signal: NodeJS.Signals): boolean {
    if (!this.unreaped) return false;
    try {
      process.kill(-this.proc.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  write(data: Uint8Array): void {
    const unread = this.input ? this.input.pending : this.pendingInput;
    if (unread + data.length > MAX_PENDING_INPUT_BYTES) {
      throw new ApiError(API_LIMIT, `process ${this.processId} has not read ${unread} bytes of earlier input (limit ${MAX_PENDING_INPUT_BYTES}); wait and write again`);
    }
    if (this.input) return this.input.write(data);
    if (this.terminal) {
      // Counted until the terminal's drain (inputDrained) says Bun's buffer is empty.
      this.pendingInput += data.length;
      this.terminal.write(data);
      return;
    }
    const stdin = this.proc.stdin as import("bun").FileSink | undefined;
    if (!stdin) return;
    // A promise from write or flush means Bun kept bytes back: they count until it resolves.
    const wrote = stdin.write(data);
    const flushed = stdin.flush();
    const pending = wrote instanceof Promise ? wrote : flushed instanceof Promise ? flushed : undefined;
    if (!pending) return;
    this.pendingInput += data.length;
    const settle = () => {
      this.pendingInput = Math.max(0, this.pendingInput - data.length);
    };
    pending.then(settle, settle);
  }

  /** The terminal's drain: everything written to it has reached the pty. */
  inputDrained(): void {
    this.pendingInput = 0;
  }

  closeStdin(): void {
    if (this.terminal) (this.input ?? this.terminal).write(EOT);
    else if (this.input) this.input.end();
    else void (this.proc.stdin as import("bun").FileSink | undefined)?.end();
  }

  resize(size: TerminalSize): void {
    this.terminal?.resize(size.cols, size.rows);
    this.terminalSize = size;
  }
}
