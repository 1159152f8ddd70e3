/**
 * Test helper: a minimal WebSocket client (RFC 6455) written from scratch over
 * a raw Unix or TCP socket, so tests can observe the server's real protocol —
 * the upgrade handshake, frame lengths, oversized frames, garbage bytes and
 * abrupt disconnects — without the global WebSocket class or anything in src/.
 *
 * Every wait has a deadline.
 */
import { createHash, randomBytes } from "node:crypto";
import type { Socket } from "bun";

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** A wait for something that must happen (a connection, a reply, a close), generous for a loaded machine. */
const DEFAULT_TIMEOUT_MS = 15_000;

export const OP_CONTINUATION = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

export type Target = { unix: string } | { hostname: string; port: number };

function describe(target: Target): string {
  return "unix" in target ? `unix:${target.unix}` : `${target.hostname}:${target.port}`;
}

/** A raw byte connection: buffered reads, queued writes (with backpressure), and deadline-bound waits. */
export class RawConnection {
  private socket: Socket<undefined> | undefined;
  private inbox: Buffer = Buffer.alloc(0);
  private outbox: Buffer[] = [];
  private listeners = new Set<() => void>();
  private resolveClosed!: () => void;
  isClosed = false;
  /** Resolves when the underlying socket is closed (by either side). */
  readonly closed: Promise<void> = new Promise<void>((resolve) => (this.resolveClosed = resolve));
  /** Called with the buffer whenever bytes arrive; may consume them via `take`. */
  onData: (() => void) | undefined;

  private constructor(readonly target: Target) {}

  static async open(target: Target, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RawConnection> {
    const conn = new RawConnection(target);
    const handlers = {
      data: (_socket: Socket<undefined>, data: Buffer) => {
        conn.inbox = conn.inbox.length === 0 ? Buffer.from(data) : Buffer.concat([conn.inbox, data]);
        conn.onData?.();
        conn.notify();
      },
      drain: () => conn.flush(),
      close: () => conn.markClosed(),
      end: () => conn.markClosed(),
      error: () => conn.markClosed(),
      connectError: () => conn.markClosed(),
    };
    const connecting = "unix" in target
      ? Bun.connect({ unix: target.unix, socket: handlers })
      : Bun.connect({ hostname: target.hostname, port: target.port, socket: handlers });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms connecting to ${describe(target)}`)), timeoutMs);
    });
    try {
      conn.socket = (await Promise.race([connecting, timeout])) as Socket<undefined>;
    } catch (error) {
      connecting.then((socket) => socket.end(), () => {});
      throw error;
    } finally {
      clearTimeout(timer);
    }
    return conn;
  }

  get buffered(): Buffer {
    return this.inbox;
  }

  /** Removes and returns the first `n` buffered bytes. */
  take(n: number): Buffer {
    const head = this.inbox.subarray(0, n);
    this.inbox = this.inbox.subarray(n);
    return head;
  }

  write(bytes: Uint8Array | string): void {
    if (this.isClosed) return;
    this.outbox.push(typeof bytes === "string" ? Buffer.from(bytes) : Buffer.from(bytes));
    this.flush();
  }

  private flush(): void {
    while (this.outbox.length > 0 && this.socket && !this.isClosed) {
      const chunk = this.outbox[0] as Buffer;
      const written = this.socket.write(chunk);
      if (written < 0) {
        this.outbox = [];
        return;
      }
      if (written < chunk.length) {
        this.outbox[0] = chunk.subarray(written);
        return; // wait for `drain`
      }
      this.outbox.shift();
    }
  }

  /** Half-closes gracefully (FIN) after pending writes. */
  end(): void {
    this.socket?.end();
  }

  /** Abrupt close: drops pending writes and closes now. */
  destroy(): void {
    this.outbox = [];
    try {
      this.socket?.terminate();
    } catch {
      this.socket?.end();
    }
    this.markClosed();
  }

  private markClosed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.outbox = [];
    this.resolveClosed();
    this.notify();
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }

  /**
   * Resolves with the first defined value of `check` (evaluated now and after
   * every read or close); rejects at the deadline, or once the connection is
   * closed while `check` still has nothing.
   */
  waitFor<T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = (fn: () => void) => {
        this.listeners.delete(listener);
        clearTimeout(timer);
        fn();
      };
      const listener = () => {
        let value: T | undefined;
        try {
          value = check();
        } catch (error) {
          done(() => reject(error));
          return;
        }
        if (value !== undefined) done(() => resolve(value as T));
        else if (this.isClosed) done(() => reject(new Error(`connection to ${describe(this.target)} closed while waiting for ${what}`)));
      };
      timer = setTimeout(() => done(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))), timeoutMs);
      this.listeners.add(listener);
      listener();
    });
  }

  /** Waits until the socket is closed; rejects at the deadline. */
  waitClosed(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    return this.waitFor(() => (this.isClosed ? true : undefined), timeoutMs, "the connection to close").then(() => {});
  }
}

/** Opens a raw byte connection (no HTTP, no WebSocket): for sending garbage. */
export function rawConnect(target: Target, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RawConnection> {
  return RawConnection.open(target, timeoutMs);
}

// ---------------------------------------------------------------------------
// HTTP/1.1

export type HttpHead = { status: number; statusText: string; headers: Record<string, string>; headerBytes: number };

function parseHead(buffer: Buffer): HttpHead | undefined {
  const end = buffer.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const lines = buffer.subarray(0, end).toString("latin1").split("\r\n");
  const statusLine = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? "");
  if (!statusLine) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0])}`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine[1]), statusText: statusLine[2] ?? "", headers, headerBytes: end + 4 };
}

function requestText(method: string, path: string, host: string, headers: Record<string, string>, body = ""): string {
  const lines = [`${method} ${path} HTTP/1.1`, `Host: ${host}`];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  if (body !== "" && !Object.keys(headers).some((h) => h.toLowerCase() === "content-length")) {
    lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  }
  return `${lines.join("\r\n")}\r\n\r\n${body}`;
}

function hostHeader(target: Target): string {
  return "unix" in target ? "localhost" : `${target.hostname.includes(":") ? `[${target.hostname}]` : target.hostname}:${target.port}`;
}

export type HttpResponse = { status: number; statusText: string; headers: Record<string, string>; body: string };

/** One plain HTTP/1.1 request (Connection: close); resolves with status, headers and body. */
export async function httpRequest(
  target: Target,
  options: { method?: string; path?: string; headers?: Record<string, string>; body?: string; timeoutMs?: number } = {},
): Promise<HttpResponse> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const conn = await RawConnection.open(target, timeoutMs);
  try {
    conn.write(requestText(options.method ?? "GET", options.path ?? "/", hostHeader(target), { Connection: "close", ...options.headers }, options.body));
    const head = await conn.waitFor(() => parseHead(conn.buffered), Math.max(1, deadline - Date.now()), "an HTTP response head");
    conn.take(head.headerBytes);
    const length = head.headers["content-length"] !== undefined ? Number(head.headers["content-length"]) : undefined;
    const noBody = options.method === "HEAD" || head.status === 101 || head.status === 204 || head.status === 304;
    if (!noBody) {
      if (length !== undefined) {
        await conn.waitFor(() => (conn.buffered.length >= length ? true : undefined), Math.max(1, deadline - Date.now()), "the HTTP body");
      } else {
        await conn.waitClosed(Math.max(1, deadline - Date.now()));
      }
    }
    const body = conn.take(length ?? conn.buffered.length).toString("utf8");
    return { status: head.status, statusText: head.statusText, headers: head.headers, body };
  } finally {
    conn.destroy();
  }
}

// ---------------------------------------------------------------------------
// WebSocket frames

/** Encodes one frame. Client frames are masked (RFC 6455 §5.3); lengths use the 7-, 16- or 64-bit form as needed. */
export function encodeFrame(opcode: number, payload: Uint8Array | string, options: { fin?: boolean; mask?: boolean } = {}): Buffer {
  const data = typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload);
  const mask = options.mask ?? true;
  const fin = options.fin ?? true;
  let header: Buffer;
  if (data.length < 126) {
    header = Buffer.alloc(2);
    header[1] = data.length;
  } else if (data.length < 0x10000) {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(data.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(data.length), 2);
  }
  header[0] = (fin ? 0x80 : 0) | (opcode & 0x0f);
  if (!mask) return Buffer.concat([header, data]);
  header[1] = (header[1] as number) | 0x80;
  const key = randomBytes(4);
  for (let i = 0; i < data.length; i++) data[i] = (data[i] as number) ^ (key[i & 3] as number);
  return Buffer.concat([header, key, data]);
}

type Frame = { fin: boolean; opcode: number; payload: Buffer };

/** Decodes one frame from the front of `buffer`, or undefined when it is not complete yet. */
export function decodeFrame(buffer: Buffer): { frame: Frame; size: number } | undefined {
  if (buffer.length < 2) return undefined;
  const b0 = buffer[0] as number;
  const b1 = buffer[1] as number;
  let offset = 2;
  let length = b1 & 0x7f;
  if (length === 126) {
    if (buffer.length < 4) return undefined;
    length = buffer.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buffer.length < 10) return undefined;
    const big = buffer.readBigUInt64BE(2);
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`frame length ${big} is absurd`);
    length = Number(big);
    offset = 10;
  }
  const masked = (b1 & 0x80) !== 0;
  const keyOffset = offset;
  if (masked) offset += 4;
  if (buffer.length < offset + length) return undefined;
  const payload = Buffer.from(buffer.subarray(offset, offset + length));
  if (masked) for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (buffer[keyOffset + (i & 3)] as number);
  return { frame: { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, payload }, size: offset + length };
}

// ---------------------------------------------------------------------------
// WebSocket client

export type CloseInfo = { code?: number; reason?: string };

export type RawWs = {
  /** The 101 response head of the upgrade. */
  readonly handshake: HttpHead;
  readonly conn: RawConnection;
  /** Sends one masked text frame. */
  send(text: string): void;
  /** Sends one masked frame of any opcode. */
  sendFrame(opcode: number, payload: Uint8Array | string, options?: { fin?: boolean; mask?: boolean }): void;
  /** Writes bytes as they are, bypassing framing. */
  sendRaw(bytes: Uint8Array | string): void;
  /** Sends a JSON-RPC request (adds `jsonrpc` and an `id` when missing) and waits for the reply with that id. */
  request(message: Record<string, unknown>, timeoutMs?: number): Promise<any>;
  /** The next message, parsed as JSON. */
  nextMessage(timeoutMs?: number): Promise<any>;
  /** The next message as text. */
  nextText(timeoutMs?: number): Promise<string>;
  /** Messages received and not yet consumed. */
  readonly pending: readonly string[];
  /** Resolves once the connection is closed, with the code of the server's close frame when it sent one. */
  closed: Promise<CloseInfo>;
  /** Waits for `closed` with a deadline. */
  waitClosed(timeoutMs?: number): Promise<CloseInfo>;
  /** Close handshake (code 1000), then closes the socket; bounded by a deadline. */
  close(code?: number, timeoutMs?: number): Promise<CloseInfo>;
  /** Abrupt TCP close without a close frame. */
  destroy(): void;
};

export type ConnectOptions = { headers?: Record<string, string>; path?: string; timeoutMs?: number };

/** The upgrade was answered with something other than 101. */
export class UpgradeRefused extends Error {
  constructor(
    readonly status: number,
    readonly headers: Record<string, string>,
  ) {
    super(`WebSocket upgrade refused with HTTP ${status}`);
    this.name = "UpgradeRefused";
  }
}

export function connect(socketPath: string, options: ConnectOptions = {}): Promise<RawWs> {
  return connectTarget({ unix: socketPath }, options);
}

export function connectTcp(hostname: string, port: number, options: ConnectOptions = {}): Promise<RawWs> {
  return connectTarget({ hostname, port }, options);
}

let nextId = 1;

export async function connectTarget(target: Target, options: ConnectOptions = {}): Promise<RawWs> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const conn = await RawConnection.open(target, timeoutMs);
  const key = randomBytes(16).toString("base64");
  conn.write(
    requestText("GET", options.path ?? "/", hostHeader(target), {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": key,
      "Sec-WebSocket-Version": "13",
      ...options.headers,
    }),
  );
  let head: HttpHead;
  try {
    head = await conn.waitFor(() => parseHead(conn.buffered), Math.max(1, deadline - Date.now()), "the upgrade response");
  } catch (error) {
    conn.destroy();
    throw error;
  }
  if (head.status !== 101) {
    conn.destroy();
    throw new UpgradeRefused(head.status, head.headers);
  }
  const expectedAccept = createHash("sha1").update(key + WS_GUID).digest("base64");
  if (head.headers["sec-websocket-accept"] !== expectedAccept) {
    conn.destroy();
    throw new Error(`bad Sec-WebSocket-Accept: got ${head.headers["sec-websocket-accept"]}, expected ${expectedAccept}`);
  }
  conn.take(head.headerBytes);

  const messages: string[] = [];
  /** Called with each message as it completes, before it is visible to `waitFor` checks (request's reply matchers). */
  const arrivals = new Set<(text: string) => void>();
  const closeInfo: CloseInfo = {};
  let sentClose = false;
  let fragments: Buffer[] = [];
  let protocolError: Error | undefined;

  const sendFrame = (opcode: number, payload: Uint8Array | string, frameOptions?: { fin?: boolean; mask?: boolean }) =>
    conn.write(encodeFrame(opcode, payload, frameOptions));

  const readFrames = () => {
    while (!protocolError) {
      let decoded: ReturnType<typeof decodeFrame>;
      try {
        decoded = decodeFrame(conn.buffered);
      } catch (error) {
        protocolError = error as Error;
        conn.destroy();
        return;
      }
      if (!decoded) return;
      conn.take(decoded.size);
      const { fin, opcode, payload } = decoded.frame;
      if (opcode === OP_TEXT || opcode === OP_BINARY || opcode === OP_CONTINUATION) {
        fragments.push(payload);
        if (fin) {
          const text = Buffer.concat(fragments).toString("utf8");
          messages.push(text);
          fragments = [];
          for (const arrived of arrivals) arrived(text);
        }
      } else if (opcode === OP_CLOSE) {
        closeInfo.code = payload.length >= 2 ? payload.readUInt16BE(0) : undefined;
        closeInfo.reason = payload.length > 2 ? payload.subarray(2).toString("utf8") : undefined;
        if (!sentClose) {
          sentClose = true;
          sendFrame(OP_CLOSE, payload.subarray(0, 2));
        }
        conn.end();
      } else if (opcode === OP_PING) {
        sendFrame(OP_PONG, payload);
      }
    }
  };
  conn.onData = readFrames;
  readFrames(); // bytes that arrived together with the 101

  const closed = conn.closed.then(() => ({ ...closeInfo }));

  const nextText = (waitMs = DEFAULT_TIMEOUT_MS) =>
    conn.waitFor(
      () => {
        if (protocolError) throw protocolError;
        return messages.length > 0 ? (messages.shift() as string) : undefined;
      },
      waitMs,
      "a message",
    );

  const waitClosed = async (waitMs = DEFAULT_TIMEOUT_MS) => {
    await conn.waitClosed(waitMs);
    return closed;
  };

  return {
    handshake: head,
    conn,
    send: (text) => sendFrame(OP_TEXT, text),
    sendFrame,
    sendRaw: (bytes) => conn.write(bytes),
    async nextMessage(waitMs) {
      const text = await nextText(waitMs);
      try {
        return JSON.parse(text);
      } catch {
        throw new Error(`message is not JSON: ${text.slice(0, 200)}`);
      }
    },
    nextText,
    get pending() {
      return messages;
    },
    async request(message, waitMs = DEFAULT_TIMEOUT_MS) {
      const full: Record<string, unknown> = { jsonrpc: "2.0", ...message, id: "id" in message ? message.id : `raw-${nextId++}` };
      // Each message is parsed once, as it arrives. Re-parsing every unconsumed message at every read made a
      // connection whose notifications nobody drains (megabytes of process/output) quadratic: the attack suites'
      // 100-process loops ran 5x slower by their end and past their timeout on a loaded machine.
      let reply: any;
      const match = (text: string) => {
        if (reply !== undefined) return;
        let parsed: any;
        try {
          parsed = JSON.parse(text);
        } catch {
          return;
        }
        if (parsed !== null && typeof parsed === "object" && parsed.id === full.id && !("method" in parsed)) {
          reply = parsed;
          const at = messages.indexOf(text);
          if (at >= 0) messages.splice(at, 1);
        }
      };
      // A reply already waiting can only answer an id the caller chose (a fresh raw-N was never sent before).
      if ("id" in message) for (const text of [...messages]) match(text);
      arrivals.add(match);
      sendFrame(OP_TEXT, JSON.stringify(full));
      try {
        return await conn.waitFor(
          () => {
            if (protocolError) throw protocolError;
            return reply;
          },
          waitMs,
          `the reply to ${JSON.stringify(full.method)} (id ${JSON.stringify(full.id)})`,
        );
      } finally {
        arrivals.delete(match);
      }
    },
    closed,
    waitClosed,
    async close(code = 1000, waitMs = DEFAULT_TIMEOUT_MS) {
      if (!sentClose && !conn.isClosed) {
        sentClose = true;
        const payload = Buffer.alloc(2);
        payload.writeUInt16BE(code, 0);
        sendFrame(OP_CLOSE, payload);
      }
      try {
        return await waitClosed(waitMs);
      } catch {
        conn.destroy();
        return closed;
      }
    },
    destroy: () => conn.destroy(),
  };
}
