/**
 * One WebSocket connection as the API sees it, with explicit backpressure:
 * - every send looks at Bun's buffered amount; past MAX_BACKLOG_BYTES of
 *   unsent output the connection is closed with 1008 (the client reconnects
 *   and re-attaches from its offsets); a send Bun drops closes it with 1013;
 * - while PAUSE_READING_BYTES of output is unsent, requests are queued, not
 *   handled (so a client that does not read its replies cannot make the server
 *   produce more); past MAX_PENDING_REQUEST_BYTES of queued requests the
 *   connection is closed with 1008;
 * - while MAX_IN_FLIGHT_REQUEST_BYTES of requests are being handled (replies
 *   not yet sent: slow disks, tunnel flow control), further requests are
 *   queued and its socket is not read until they are done (TCP backpressure),
 *   so a client pipelining big writes cannot make the server hold all of
 *   them at once.
 * - the first time a send leaves bytes unsent, `onFirstBacklog` runs once
 *   (serve.ts raises the Unix socket's kernel send buffer there, so bulk
 *   connections, and only they, write a data frame in one go).
 */
import type { ServerWebSocket } from "bun";
import { logger } from "../output.ts";
import { dataNotificationText } from "../rpc-data.ts";
import type { Conn } from "./api/types.ts";

/** Unsent output one connection may hold before it is closed (spec: 8 MiB). */
export const MAX_BACKLOG_BYTES = 8 * 1024 * 1024;
/** While this much output is unsent, the connection's requests wait. */
export const PAUSE_READING_BYTES = 1024 * 1024;
/**
 * Request text of one connection being handled at once; more waits in the
 * queue. 300 pipelined 700 KiB
 * fs/writeFile calls were all held at once without it (+163 MiB).
 */
export const MAX_IN_FLIGHT_REQUEST_BYTES = 16 * 1024 * 1024;
/** Requests one paused connection may queue before it is closed. */
export const MAX_PENDING_REQUEST_BYTES = 8 * 1024 * 1024;
/**
 * Kernel send buffer asked for a Unix-socket connection once it has a
 * backlog. Linux's 208 KiB default cut each 700 KB data frame into four
 * writes, each a wake-up on both ends; this lets one go out whole (the
 * largest single gain in bench/README.md's tunnel rows). Linux counts it
 * twice: at most 2 MiB of kernel memory per such connection, beside
 * MAX_BACKLOG_BYTES.
 */
export const UNIX_SEND_BUFFER_BYTES = 1024 * 1024;
/** A connection closed for its backlog gets this long for the close handshake, then is cut. */
export const CLOSE_HANDSHAKE_MS = 1_000;
export const CLOSE_POLICY = 1008;
export const CLOSE_TRY_AGAIN = 1013;

export class SocketConn implements Conn {
  closed = false;
  private readonly drainListeners = new Set<() => void>();
  private readonly closeListeners = new Set<() => void>();
  private readonly pending: string[] = [];
  private pendingBytes = 0;
  private inFlightBytes = 0;

  constructor(
    readonly id: number,
    private readonly ws: ServerWebSocket<unknown>,
    /** Handles one frame; a promise means its reply is still to come (the request counts as in flight until then). */
    private readonly handle: (text: string) => Promise<unknown> | undefined,
    private onFirstBacklog?: () => void,
    /** Every byte sent: the server is not idle (server/idle-trim.ts postpones its trim). */
    private readonly onActivity?: () => void,
  ) {}

  /** Unsent bytes before `text` (its UTF-8 size measured only once the backlog is past the cap at all). */
  private backlogBeyond(text: string): number {
    const buffered = this.ws.getBufferedAmount();
    return buffered <= MAX_BACKLOG_BYTES ? buffered : buffered - Buffer.byteLength(text);
  }

  /**
   * Sends one message; closes the connection when its backlog, this message
   * aside, passes the cap. One reply larger than the cap (a process/list of
   * long argvs, a big listing) goes to a client that reads it; a client that
   * does not read is closed at its next message (its requests wait meanwhile).
   */
  send(text: string): void {
    if (this.closed || this.ws.readyState !== 1) return;
    this.onActivity?.();
    const status = this.ws.send(text);
    if (status === 0) this.shut(CLOSE_TRY_AGAIN, "message dropped under backpressure; reconnect");
    else if (this.backlogBeyond(text) > MAX_BACKLOG_BYTES) this.shut(CLOSE_POLICY, "unsent backlog over 8 MiB; reconnect and re-attach from your offsets");
    else if (status === -1 && this.onFirstBacklog) {
      const hook = this.onFirstBacklog;
      this.onFirstBacklog = undefined;
      try {
        hook();
      } catch (error) {
        logger.warn(`connection ${this.id}: ${String(error)}`);
      }
    }
  }

  notify(method: string, params: unknown): void {
    this.send(JSON.stringify({ jsonrpc: "2.0", method, params }));
  }

  notifyData(method: string, params: Record<string, unknown>, bytes: Uint8Array): void {
    if (this.closed) return;
    this.send(dataNotificationText(method, params, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("base64")));
  }

  backlog(): number {
    return this.closed ? 0 : this.ws.getBufferedAmount();
  }

  /** A text frame from the client: handled now, or queued while replies are not drained. */
  receive(text: string): void {
    if (this.closed) return;
    if (this.pending.length === 0 && this.mayHandle()) {
      this.dispatch(text);
      return;
    }
    this.pending.push(text);
    this.pendingBytes += text.length;
    // Waiting on its own unfinished requests (not on unread replies): stop reading its socket, so it sees TCP backpressure.
    if (this.inFlightBytes >= MAX_IN_FLIGHT_REQUEST_BYTES) this.ws.pause();
    if (this.pendingBytes > MAX_PENDING_REQUEST_BYTES) this.shut(CLOSE_POLICY, "too many requests while replies were not read");
  }

  onDrain(listener: () => void): () => void {
    this.drainListeners.add(listener);
    return () => this.drainListeners.delete(listener);
  }

  onClose(cleanup: () => void): () => void {
    if (this.closed) {
      cleanup();
      return () => {};
    }
    // Wrapped so that registering one function twice still gives two independent entries.
    const entry = () => cleanup();
    this.closeListeners.add(entry);
    return () => this.closeListeners.delete(entry);
  }

  private mayHandle(): boolean {
    return this.backlog() < PAUSE_READING_BYTES && this.inFlightBytes < MAX_IN_FLIGHT_REQUEST_BYTES;
  }

  private dispatch(text: string): void {
    const done = this.handle(text);
    if (!done) return;
    this.inFlightBytes += text.length;
    const settle = () => {
      this.inFlightBytes -= text.length;
      this.handlePending();
    };
    done.then(settle, settle);
  }

  /** Handles queued requests while the backlog stays low and little is in flight; reads again once none wait. */
  private handlePending(): void {
    while (!this.closed && this.pending.length > 0 && this.mayHandle()) {
      const text = this.pending.shift() as string;
      this.pendingBytes -= text.length;
      this.dispatch(text);
    }
    if (!this.closed && this.pending.length === 0 && this.ws.isPaused) this.ws.resume();
  }

  /** Bun's drain: handle queued requests, then tell the listeners. */
  drained(): void {
    this.handlePending();
    for (const listener of [...this.drainListeners]) listener();
  }

  close(code: number, reason: string): void {
    this.shut(code, reason);
  }

  /** Closes with a code; a client that does not read is cut after CLOSE_HANDSHAKE_MS. */
  shut(code: number, reason: string): void {
    if (this.closed) return;
    logger.warn(`closing connection ${this.id}: ${reason} (${code})`);
    try {
      this.ws.close(code, reason);
    } catch {
      // already closing
    }
    this.closedNow();
    const timer = setTimeout(() => {
      try {
        if (this.ws.readyState !== 3) this.ws.terminate();
      } catch {
        // gone
      }
    }, CLOSE_HANDSHAKE_MS);
    timer.unref?.();
  }

  /** The connection is gone: detach it from everything, once. */
  closedNow(): void {
    if (this.closed) return;
    this.closed = true;
    this.pending.length = 0;
    this.pendingBytes = 0;
    this.drainListeners.clear();
    const cleanups = [...this.closeListeners];
    this.closeListeners.clear();
    for (const cleanup of cleanups) {
      try {
        cleanup();
      } catch (error) {
        logger.error("connection cleanup failed:", error);
      }
    }
  }
}
