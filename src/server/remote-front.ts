/**
 * The remote-control listener's front door. Bun.serve says nothing about a TCP
 * connection until its request is complete, and keeps one alive after a 401,
 * so a port anyone on the machine can reach could be held by connections that
 * never authenticate (idle, a head trickled byte by byte, one 401 after another
 * on a kept-alive connection), each an fd and memory of the app-server. Here
 * berth accepts the TCP connections itself (Bun.listen):
 * - at most MAX_UNAUTHENTICATED_CONNECTIONS wait for their request head at
 *   once; one more pushes out the oldest waiting one (a real client sends its
 *   head at once, a squatter never does, so squatters cannot lock clients out);
 * - the head must be complete within HEAD_DEADLINE_MS and MAX_HEAD_BYTES (remote-head.ts), or
 *   the connection is cut;
 * - a head without the bearer token gets 401 and the connection is closed;
 * - an authenticated connection is piped, byte for byte, to the app-server's
 *   own Unix socket (the Bun.serve that serves local clients and counts every
 *   connection against MAX_CONNECTIONS). Each direction holds at most what one
 *   read gave: the side that sent it is paused until the other drains.
 */
import type { Socket, TCPSocketListener } from "bun";
import { logger } from "../output.ts";
import { authorizationOf, HeadReader, response } from "./remote-head.ts";
import { bearerMatches } from "./token.ts";

/** Connections accepted but not yet past the token check, at once. */
export const MAX_UNAUTHENTICATED_CONNECTIONS = 64;
/** From accept to a complete request head (TLS handshake included). */
export const HEAD_DEADLINE_MS = 10_000;
/** Bytes one direction of a pipe may hold unsent (its sender is paused long before). */
export const PIPE_BUFFER_MAX_BYTES = 1024 * 1024;
/** Once one side has closed, what is still owed to the other gets this long to go out. */
export const CLOSE_FLUSH_MS = 10_000;

/** Dropped connections are logged at most this often, with a count. */
const DROP_LOG_INTERVAL_MS = 60_000;

type Side = Socket<FrontConn>;

/** Writes what `to` takes from `queue`; true when nothing is left. */
function pump(to: Side, queue: Uint8Array[]): boolean {
  while (queue.length > 0) {
    const chunk = queue[0] as Uint8Array;
    const written = to.write(chunk);
    if (written <= 0) return false;
    if (written < chunk.length) {
      queue[0] = chunk.subarray(written);
      return false;
    }
    queue.shift();
  }
  return true;
}

/** Sends `data` now when nothing waits before it; keeps a copy of what `to` did not take, and pauses `from`. */
function forward(to: Side | undefined, queue: Uint8Array[], data: Buffer, from: Side): void {
  let rest = data;
  if (to && queue.length === 0) {
    const written = Math.max(0, to.write(data));
    if (written === data.length) return;
    rest = data.subarray(written);
  }
  queue.push(Buffer.from(rest)); // Bun may reuse its read buffer
  from.pause();
}

const queuedBytes = (queue: Uint8Array[]) => queue.reduce((sum, chunk) => sum + chunk.length, 0);

class FrontConn {
  phase: "head" | "connecting" | "piping" | "closed" = "head";
  private head: HeadReader | undefined = new HeadReader();
  private timer: ReturnType<typeof setTimeout> | undefined;
  upstream: Side | undefined;
  /** Bytes owed to the upstream (the Unix socket) and to the client. */
  private readonly toUpstream: Uint8Array[] = [];
  private readonly toClient: Uint8Array[] = [];
  private clientGone = false;
  private upstreamGone = false;

  constructor(
    readonly client: Side,
    private readonly front: Front,
  ) {
    this.timer = setTimeout(() => this.cut("no complete request head in time"), HEAD_DEADLINE_MS);
  }

  /** Bytes from the TCP client. */
  fromClient(data: Buffer): void {
    if (this.phase === "closed") return;
    if (this.phase === "head") {
      this.readHead(data);
      return;
    }
    forward(this.upstream, this.toUpstream, data, this.client);
    if (queuedBytes(this.toUpstream) > PIPE_BUFFER_MAX_BYTES) this.cut("the client sent past its pipe's bound");
  }

  private readHead(data: Buffer): void {
    const read = (this.head as HeadReader).push(data);
    if (read.kind === "more") return;
    if (read.kind === "tooLarge") {
      this.refuse("431 Request Header Fields Too Large", "request head too large\n");
      return;
    }
    if (!bearerMatches(authorizationOf(read.head), this.front.token)) {
      this.refuse("401 Unauthorized", "unauthorized\n", "www-authenticate: Bearer\r\n");
      return;
    }
    this.stopTimer();
    this.front.authenticated(this);
    this.phase = "connecting";
    this.head = undefined;
    this.toUpstream.push(read.bytes); // the head and whatever came after it
    this.client.pause();
    this.front.connectUpstream(this);
  }

  /** The Unix socket is open: send what waited, then pipe. */
  upstreamOpen(socket: Side): void {
    if (this.phase === "closed") {
      socket.terminate();
      return;
    }
    this.upstream = socket;
    this.phase = "piping";
    this.flushUp();
  }

  upstreamFailed(error: unknown): void {
    logger.warn(`remote control: cannot reach the app-server's own socket: ${String(error)}`);
    this.refuse("503 Service Unavailable", "berth app-server: not accepting connections; try again later\n", "retry-after: 1\r\n");
  }

  /** Bytes from the app-server for the client. */
  fromUpstream(data: Buffer): void {
    if (this.phase === "closed" || !this.upstream) return;
    forward(this.client, this.toClient, data, this.upstream);
    if (queuedBytes(this.toClient) > PIPE_BUFFER_MAX_BYTES) this.cut("the client does not read");
  }

  /** Sends what the upstream takes; the client is read again once nothing is owed. */
  flushUp(): void {
    if (!this.upstream || this.phase === "closed") return;
    if (!pump(this.upstream, this.toUpstream)) return;
    if (this.clientGone) this.cut();
    else this.client.resume();
  }

  flushDown(): void {
    if (!this.upstream || this.phase === "closed") return;
    if (!pump(this.client, this.toClient)) return;
    if (this.upstreamGone) this.cut();
    else this.upstream.resume();
  }

  /** The client sent FIN or closed: what it sent still reaches the app-server, then the Unix side ends. */
  clientClosed(): void {
    if (this.clientGone) return;
    this.clientGone = true;
    if (this.phase !== "piping") {
      this.cut();
      return;
    }
    this.toClient.length = 0;
    this.flushUp();
    this.linger();
  }

  upstreamClosed(): void {
    if (this.upstreamGone) return;
    this.upstreamGone = true;
    this.toUpstream.length = 0;
    this.flushDown();
    this.linger();
  }

  /** A side that does not take what it is owed must not keep the other for ever. */
  private linger(): void {
    if (this.phase !== "closed" && this.timer === undefined) this.timer = setTimeout(() => this.cut(), CLOSE_FLUSH_MS);
  }

  private refuse(status: string, body: string, extra = ""): void {
    if (this.phase === "closed") return;
    this.client.write(response(status, body, extra));
    this.cut();
  }

  private stopTimer(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Ends both sides once: gracefully (FIN after what was written), or cut at once when `reason` says why. */
  cut(reason?: string): void {
    if (this.phase === "closed") return;
    if (reason) this.front.dropped(reason);
    this.phase = "closed";
    this.stopTimer();
    this.head = undefined;
    this.toUpstream.length = 0;
    this.toClient.length = 0;
    this.front.forget(this);
    if (!this.clientGone) {
      this.clientGone = true;
      if (reason) this.client.terminate();
      else this.client.end();
    }
    if (this.upstream && !this.upstreamGone) {
      this.upstreamGone = true;
      if (reason) this.upstream.terminate();
      else this.upstream.end();
    }
  }
}

type Front = {
  token: string;
  /** A connection was cut: counted, and logged at most once per DROP_LOG_INTERVAL_MS (a flood must not fill the log). */
  dropped(reason: string): void;
  authenticated(conn: FrontConn): void;
  forget(conn: FrontConn): void;
  connectUpstream(conn: FrontConn): void;
};

export type RemoteFront = { hostname: string; port: number; stop(): void };

/** Listens on hostname:port (TLS when given) and pipes authenticated connections to `unixPath`. */
export function startRemoteFront(options: {
  hostname: string;
  port: number;
  tls?: { cert: string; key: string };
  token: string;
  unixPath: string;
}): RemoteFront {
  /** Waiting for their head, oldest first (a Set keeps insertion order). */
  const waiting = new Set<FrontConn>();
  const all = new Set<FrontConn>();
  let drops = 0;
  let lastDropLog = 0;
  const front: Front = {
    token: options.token,
    dropped: (reason) => {
      drops += 1;
      const now = Date.now();
      if (now - lastDropLog < DROP_LOG_INTERVAL_MS) return;
      lastDropLog = now;
      logger.warn(`remote control: cut ${drops} connection(s) since the last note; the latest: ${reason}`);
      drops = 0;
    },
    authenticated: (conn) => waiting.delete(conn),
    forget: (conn) => {
      waiting.delete(conn);
      all.delete(conn);
    },
    connectUpstream: (conn) => {
      Bun.connect<FrontConn>({
        unix: options.unixPath,
        data: conn,
        socket: {
          open: (socket) => conn.upstreamOpen(socket),
          data: (socket, data) => socket.data.fromUpstream(data),
          drain: (socket) => socket.data.flushUp(),
          end: (socket) => socket.data.upstreamClosed(),
          close: (socket) => socket.data.upstreamClosed(),
          error: (socket) => socket.data.upstreamClosed(),
        },
      }).catch((error: unknown) => conn.upstreamFailed(error));
    },
  };
  const listener: TCPSocketListener<FrontConn> = Bun.listen<FrontConn>({
    hostname: options.hostname,
    port: options.port,
    ...(options.tls ? { tls: { cert: Bun.file(options.tls.cert), key: Bun.file(options.tls.key) } } : {}),
    socket: {
      open(socket) {
        const conn = new FrontConn(socket, front);
        socket.data = conn;
        if (waiting.size >= MAX_UNAUTHENTICATED_CONNECTIONS) {
          const oldest = waiting.values().next().value as FrontConn;
          oldest.cut(`${MAX_UNAUTHENTICATED_CONNECTIONS} connections already waiting to authenticate; dropped the oldest`);
        }
        waiting.add(conn);
        all.add(conn);
      },
      data: (socket, data) => socket.data.fromClient(data),
      drain: (socket) => socket.data.flushDown(),
      end: (socket) => socket.data.clientClosed(),
      close: (socket) => socket.data?.clientClosed(),
      error: (socket) => socket.data?.clientClosed(),
    },
  });
  return {
    hostname: listener.hostname,
    port: listener.port,
    stop() {
      listener.stop(true);
      for (const conn of [...all]) conn.cut();
    },
  };
}
