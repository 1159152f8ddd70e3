/**
 * One tunnel of tunnel.ts: a TCP socket whose bytes go to the client as
 * tunnel/data, and the bounded queue of the client's bytes for it.
 *
 * Closing (the spec names only `tunnel/close`; half-close is berth's addition,
 * what `ssh -L` and socat do with an EOF):
 * - `tunnel/close {tunnelId}`: queued bytes are sent, then the TCP socket is
 *   closed; the far side's later bytes are dropped (tunnel/closed "client").
 * - `tunnel/close {tunnelId, halfClose: true}`: the client has finished
 *   sending. Queued bytes are sent, then only the socket's write side is shut
 *   down (the far side reads EOF); the far side's bytes keep coming as
 *   tunnel/data until it closes (tunnel/closed "remote"). Later writes fail
 *   with -32004; a plain tunnel/close still closes it at once.
 */
import type { Socket } from "bun";
import { API_LIMIT, API_NOT_FOUND, ApiError, type Conn } from "./types.ts";

/** Reading a TCP socket pauses while the connection has more than this queued for the client (spec). */
export const BACKLOG_PAUSE_BYTES = 1024 * 1024;
/** A tunnel/write is answered once the tunnel's unsent bytes are at most this (flow control for the client). */
export const WRITE_QUEUE_LOW_BYTES = 1024 * 1024;
/** Unsent bytes one tunnel may hold; a write past it fails with -32001. */
export const WRITE_QUEUE_MAX_BYTES = 8 * 1024 * 1024;
/**
 * Unsent bytes all tunnels of one connection may hold together, closing ones
 * (still flushing) included; a write past it fails with -32001. Per tunnel
 * alone, 256 tunnels to peers that do not read held 2 GiB for one client.
 * `remote forward` keeps at most ~3 MiB queued per tunnel (its 2 MiB of
 * unanswered writes past the 1 MiB low mark): about 20 stalled tunnels fit.
 */
export const CONNECTION_WRITE_QUEUE_MAX_BYTES = 64 * 1024 * 1024;
/** After tunnel/close, queued bytes get this long to reach a peer before the socket is cut. */
export const CLOSE_FLUSH_TIMEOUT_MS = 10_000;
export type CloseReason = "remote" | "client" | "error" | "shutdown";

/** What the tunnels of one connection hold unsent, together. */
export type WriteAccount = { queued: number };

export class Tunnel {
  private queue: Uint8Array[] = [];
  private queued = 0;
  private waiters: Array<() => void> = [];
  private ending = false;
  /** The client has finished sending (half-close): once the queue is out, the socket's write side is shut down. */
  private halfClosed = false;
  private shutDown = false;
  private terminated = false;
  closed = false;
  /** False until the client has its tunnelId: earlier bytes and closes wait (the reply goes out first). */
  private started = false;
  private early: Buffer[] = [];
  private pendingClose: { reason: CloseReason; message?: string } | undefined;
  socket!: Socket<undefined>;
  stopDrainListener: () => void = () => {};
  stopCloseListener: () => void = () => {};

  constructor(
    readonly id: string,
    readonly conn: Conn,
    private readonly onClosed: (tunnel: Tunnel) => void,
    private readonly account: WriteAccount = { queued: 0 },
  ) {}

  /** Bytes from the TCP peer: forwarded, then reading pauses if the client's backlog is too deep. */
  received(data: Buffer): void {
    if (!this.started) {
      this.early.push(data); // the socket is paused until start(): at most one read
      return;
    }
    if (this.closed) return;
    this.conn.notifyData("tunnel/data", { tunnelId: this.id }, data);
    if (this.conn.backlog() > BACKLOG_PAUSE_BYTES) this.socket.pause();
  }

  /** Called once the tunnel/open reply is on its way: early bytes, then an early close, else reading starts. */
  start(): void {
    this.started = true;
    for (const data of this.early.splice(0)) this.received(data);
    if (this.pendingClose) this.finish(this.pendingClose.reason, this.pendingClose.message);
    else this.clientDrained();
  }

  /** The client's backlog drained: read again. */
  clientDrained(): void {
    if (!this.closed && this.conn.backlog() <= BACKLOG_PAUSE_BYTES) this.socket.resume();
  }

  /** `data` may be reused by the caller once this returns its promise (params base64Transient): what stays queued is copied. */
  async write(data: Uint8Array): Promise<void> {
    if (this.ending) throw new ApiError(API_NOT_FOUND, `tunnel ${this.id} is closing`);
    if (this.halfClosed) throw new ApiError(API_NOT_FOUND, `tunnel ${this.id} was half-closed: it takes no more writes (its far side's bytes still come)`);
    if (this.queued + data.length > WRITE_QUEUE_MAX_BYTES) {
      throw new ApiError(API_LIMIT, `tunnel ${this.id} already has ${this.queued} bytes unsent (limit ${WRITE_QUEUE_MAX_BYTES}); wait for earlier writes to be answered`);
    }
    if (this.account.queued + data.length > CONNECTION_WRITE_QUEUE_MAX_BYTES) {
      throw new ApiError(
        API_LIMIT,
        `the tunnels of this connection already have ${this.account.queued} bytes unsent (limit ${CONNECTION_WRITE_QUEUE_MAX_BYTES}); wait for earlier writes to be answered`,
      );
    }
    this.queue.push(data);
    this.queued += data.length;
    this.account.queued += data.length;
    this.flush();
    const last = this.queue.length - 1;
    if (last >= 0 && this.queue[last]!.buffer === data.buffer) this.queue[last] = new Uint8Array(this.queue[last]!); // a copy
    if (this.queued > WRITE_QUEUE_LOW_BYTES && !this.closed) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Writes what the socket takes; called again on the socket's drain. */
  flush(): void {
    while (this.queue.length > 0 && !this.terminated) {
      const chunk = this.queue[0] as Uint8Array;
      const written = this.socket.write(chunk);
      if (written <= 0) break;
      this.queued -= written;
      this.account.queued -= written;
      if (written < chunk.length) {
        this.queue[0] = chunk.subarray(written);
        break;
      }
      this.queue.shift();
    }
    if (this.queued <= WRITE_QUEUE_LOW_BYTES) this.release();
    if (this.ending && this.queue.length === 0 && !this.terminated) {
      this.terminated = true;
      // After a half-close our FIN is out and end() would wait for the far side's: a plain close closes now.
      if (this.shutDown) this.socket.terminate();
      else this.socket.end();
    } else if (this.halfClosed && this.queue.length === 0 && !this.shutDown && !this.terminated) {
      this.shutDown = true;
      this.socket.shutdown(); // SHUT_WR: the far side reads EOF, and its answer still comes
    }
  }

  private release(): void {
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  /** The client has finished sending: what is queued goes out, then the write side is shut down; reading goes on. */
  halfCloseFromClient(): void {
    if (this.ending || this.halfClosed) return;
    this.halfClosed = true;
    this.flush();
  }

  /** The client is done: send what is queued, then FIN. */
  endFromClient(): void {
    this.ending = true;
    this.finish("client", undefined, false); // before flush: Bun may run the close handler inside end()
    this.flush();
    // A peer that never reads must not keep the socket forever.
    if (!this.terminated) setTimeout(() => this.terminate(), CLOSE_FLUSH_TIMEOUT_MS).unref?.();
  }

  private terminate(): void {
    if (this.terminated) return;
    this.terminated = true;
    try {
      this.socket.terminate();
    } catch {
      // already closed
    }
    this.dropQueue();
  }

  /** The socket is gone (cut, or closed by the peer): what was still queued never goes out, and stops counting. */
  dropQueue(): void {
    this.account.queued -= this.queued;
    this.queued = 0;
    this.queue = [];
    this.release();
  }

  /** Ends the tunnel once; tells the client unless its connection is gone. */
  finish(reason: CloseReason, message?: string, terminate = true): void {
    if (!this.started) {
      this.pendingClose ??= { reason, ...(message ? { message } : {}) };
      return;
    }
    if (this.closed) return;
    this.closed = true;
    this.stopDrainListener();
    this.stopCloseListener();
    this.release();
    if (terminate) this.terminate();
    this.onClosed(this);
    this.conn.notify("tunnel/closed", { tunnelId: this.id, reason, ...(message ? { message } : {}) });
  }
}
