/**
 * `berth remote HOST forward [LOCALHOST:]LOCALPORT:REMOTEHOST:REMOTEPORT`:
 * a local TCP listener whose connections are carried by `tunnel/*` inside
 * the berth connection (so it works where sshd forbids port forwarding).
 * Its JSON line comes once it listens (a StreamingResult for cli.ts); it then
 * runs until SIGINT/SIGTERM/SIGHUP and exits 0. When
 * the connection drops, open tunnels end and it reconnects with backoff; a
 * local connection made meanwhile waits for the new connection (up to
 * RECONNECT_WAIT_MS) instead of being refused. Both directions are
 * flow-controlled, never cut short: a local client waits for the answers to
 * its tunnel/writes; a slow local reader holds the connection's reading (so
 * the host stops reading the far socket) until it drains, for at most
 * LOCAL_STALL_MAX_MS before it is reset.
 * A local client that half-closes (sends FIN) is passed on as such, as
 * `ssh -L` does: `tunnel/close {halfClose: true}` after its bytes, so the far
 * side reads EOF and its answer still comes back, until the far side closes.
 */
import type { Socket, TCPSocketListener } from "bun";
import { BerthError } from "../errors.ts";
import type { StreamingResult } from "../streaming.ts";
import type { Forward } from "./args.ts";
import { reusableBase64Decoder } from "../rpc-data.ts";
import { connect, ConnectionClosed, RpcError, type Connection } from "./connection.ts";
import { SocketQueue } from "./socket-queue.ts";
import { reconnectDelayMs } from "./offsets.ts";

/**
 * Bytes from the far side waiting for a slow local socket past which the forward stops reading the
 * connection until that socket drains: the host's backlog then grows and it stops reading its TCP sockets
 * (the spec's 1 MiB), so the far side is held back instead of the stream being cut.
 */
const LOCAL_BACKLOG_HOLD_BYTES = 1024 * 1024;
/** Bytes from the far side waiting for a slow local socket; past this (a hold that did not hold) it is reset. */
const LOCAL_BACKLOG_MAX_BYTES = 8 * 1024 * 1024;
/**
 * How long one local socket that does not read may hold the whole connection (every tunnel, every answer)
 * before it is reset; under CALL_TIMEOUT_MS, so the others' calls are answered in time.
 */
const LOCAL_STALL_MAX_MS = 20_000;
/** Bytes a local client sends before its tunnel is open; past this its socket is paused until the tunnel opens. */
const LOCAL_PENDING_MAX_BYTES = 1024 * 1024;
/** The same for all local clients together (many connecting during an outage); past this each one that sends is paused. */
const LOCAL_PENDING_TOTAL_MAX_BYTES = 8 * 1024 * 1024;
/**
 * Bytes of one local client's tunnel/writes not yet answered; past this its socket is paused until answers
 * come (the host answers a write once its queue for the tunnel is short), so a far side that reads slowly
 * holds the client back instead of the forward's memory (and the host's queue, which refuses writes past 8 MiB).
 */
const LOCAL_UNANSWERED_MAX_BYTES = 2 * 1024 * 1024;
/** How long a local connection waits for a lost connection to the host to come back before it is refused. */
const RECONNECT_WAIT_MS = 30_000;

type Local = {
  tunnelId?: string;
  pending: Uint8Array[];
  pendingBytes: number;
  unanswered: number;
  backlog: SocketQueue;
  /** Set while this socket's backlog holds the connection's reading: ends the hold. */
  release?: () => void;
  /** The far side closed while bytes still wait for this socket: end it once they are written. */
  endWhenDrained?: boolean;
  /** The local client has finished sending (FIN): its tunnel is half-closed once its bytes are on their way. */
  finished?: boolean;
  closed: boolean;
};

/** Ends a local socket's hold on the connection's reading, if it has one. */
function release(local: Local): void {
  local.release?.();
  local.release = undefined;
}

export async function forward(host: string, spec: Forward): Promise<StreamingResult> {
  const decode = reusableBase64Decoder();
  let conn: Connection = await connect(host);
  const byTunnel = new Map<string, Socket<Local>>();
  let stopping = false;
  /** Aborted on stop: kills the ssh of a reconnect under way (else it outlives forward until its ConnectTimeout). */
  const stopped = new AbortController();
  /** Bytes held for all local sockets whose tunnel is not open (LOCAL_PENDING_TOTAL_MAX_BYTES). */
  let pendingTotal = 0;
  /** A local socket's held bytes, handed over (tunnel open) or dropped (socket gone): out of the total. */
  const takePending = (local: Local): Uint8Array[] => {
    pendingTotal -= local.pendingBytes;
    local.pendingBytes = 0;
    return local.pending.splice(0);
  };
  /** Resolved by the reconnect loop: what local connections made while it runs wait for. */
  let reconnected: { promise: Promise<void>; resolve(): void } | undefined;

  /** The live connection, after waiting for a reconnect if one is under way; undefined past the deadline or when stopping. */
  const liveConnection = async (deadline: number): Promise<Connection | undefined> => {
    while (!stopping && conn.isClosed) {
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      reconnected ??= Promise.withResolvers<void>();
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([reconnected.promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, left)))]);
      clearTimeout(timer);
    }
    return stopping ? undefined : conn;
  };

  const wire = (c: Connection) => {
    c.on("tunnel/data", (p: { tunnelId: string; data: string }) => {
      const socket = byTunnel.get(p.tunnelId);
      if (!socket || socket.data.closed) return;
      const local = socket.data;
      // decode() reuses its buffer; the queue copies what the socket does not take.
      const queued = local.backlog.push(socket, decode(p.data));
      if (queued > LOCAL_BACKLOG_MAX_BYTES) return cut(socket, `more than ${LOCAL_BACKLOG_MAX_BYTES} bytes waited for it`);
      if (queued <= LOCAL_BACKLOG_HOLD_BYTES || local.release) return;
      const hold = Promise.withResolvers<void>();
      const timer = setTimeout(() => cut(socket, `it read nothing for ${LOCAL_STALL_MAX_MS / 1000} s while the others waited`), LOCAL_STALL_MAX_MS);
      local.release = () => {
        clearTimeout(timer);
        hold.resolve();
      };
      c.holdReading(hold.promise);
    });
    c.on("tunnel/closed", (p: { tunnelId: string }) => {
      const socket = byTunnel.get(p.tunnelId);
      byTunnel.delete(p.tunnelId);
      if (!socket) return;
      // What the far side sent before closing still goes out first.
      if (socket.data.backlog.bytes > 0) socket.data.endWhenDrained = true;
      else socket.end();
    });
    void c.closed.then(async () => {
      for (const socket of byTunnel.values()) socket.end();
      byTunnel.clear();
      if (stopping || c !== conn) return;
      process.stderr.write(`berth: connection to ${host} lost; reconnecting…\n`);
      for (let attempt = 0; !stopping; attempt += 1) {
        await Bun.sleep(reconnectDelayMs(attempt));
        if (stopping) return;
        try {
          conn = await connect(host, { signal: stopped.signal });
          wire(conn);
          process.stderr.write(`berth: reconnected to ${host}\n`);
          reconnected?.resolve();
          reconnected = undefined;
          return;
        } catch {
          // try again
        }
      }
    });
  };
  wire(conn);

  /** Resets a local socket the forward cannot serve (a truncated stream must not look like a whole one). */
  const cut = (socket: Socket<Local>, why: string) => {
    if (socket.data.closed) return;
    socket.data.closed = true; // once: later refusals and bytes for it change nothing
    process.stderr.write(`berth: a local connection to ${spec.localHost}:${spec.localPort} was reset: ${why}\n`);
    release(socket.data);
    socket.terminate();
  };
  const send = (method: string, params: object) => conn.call(method, params).catch(() => undefined);
  /** tunnel/write of what a local socket sent, flow-controlled by the answers (LOCAL_UNANSWERED_MAX_BYTES). */
  const write = (socket: Socket<Local>, tunnelId: string, bytes: Uint8Array) => {
    const local = socket.data;
    const length = bytes.length;
    local.unanswered += length;
    if (local.unanswered > LOCAL_UNANSWERED_MAX_BYTES) socket.pause();
    conn.callData("tunnel/write", { tunnelId }, bytes).then(
      () => {
        local.unanswered -= length;
        if (!local.closed && local.unanswered <= LOCAL_UNANSWERED_MAX_BYTES) socket.resume();
      },
      (error) => {
        local.unanswered -= length;
        // Refused: those bytes never reach the far side, so what follows must not either. (A lost connection ends the socket anyway.)
        if (error instanceof RpcError) cut(socket, `${host} refused its bytes (${error.message})`);
        else if (!local.closed && local.unanswered <= LOCAL_UNANSWERED_MAX_BYTES) socket.resume();
      },
    );
  };
  /** tunnel/open for a new local socket, on the live connection; a connection lost meanwhile is waited for, then tried again. */
  const openTunnel = async (socket: Socket<Local>): Promise<void> => {
    const deadline = Date.now() + RECONNECT_WAIT_MS;
    for (;;) {
      const c = await liveConnection(deadline);
      if (!c || socket.data.closed) {
        if (c === undefined && !stopping) process.stderr.write(`berth: no connection to ${host} within ${RECONNECT_WAIT_MS / 1000} s; a local connection was closed\n`);
        takePending(socket.data);
        return void socket.end();
      }
      try {
        const { tunnelId } = await c.call<{ tunnelId: string }>("tunnel/open", { host: spec.remoteHost, port: spec.remotePort });
        if (socket.data.closed) return void send("tunnel/close", { tunnelId });
        // Opened just as the connection died: that tunnel is gone with it; the data is still here, open another.
        if (c.isClosed) continue;
        socket.data.tunnelId = tunnelId;
        byTunnel.set(tunnelId, socket);
        for (const chunk of takePending(socket.data)) write(socket, tunnelId, chunk);
        if (socket.data.finished) void send("tunnel/close", { tunnelId, halfClose: true });
        if (socket.data.unanswered <= LOCAL_UNANSWERED_MAX_BYTES) socket.resume();
        return;
      } catch (error) {
        if (error instanceof ConnectionClosed) continue;
        process.stderr.write(`berth: ${host} refused the tunnel to ${spec.remoteHost}:${spec.remotePort}: ${(error as Error).message}\n`);
        takePending(socket.data);
        return void socket.end();
      }
    }
  };

  let listener: TCPSocketListener<Local>;
  try {
    listener = Bun.listen<Local>({
      hostname: spec.localHost,
      port: spec.localPort,
      // A local FIN is the client's "I have finished sending", not the end: the far side's answer still goes back.
      allowHalfOpen: true,
      socket: {
        open(socket) {
          socket.data = { pending: [], pendingBytes: 0, unanswered: 0, backlog: new SocketQueue(), closed: false };
          if (pendingTotal > LOCAL_PENDING_TOTAL_MAX_BYTES) socket.pause(); // not one read more until its tunnel opens
          void openTunnel(socket);
        },
        data(socket, chunk) {
          const { tunnelId } = socket.data;
          if (tunnelId !== undefined) return write(socket, tunnelId, chunk);
          socket.data.pending.push(new Uint8Array(chunk));
          socket.data.pendingBytes += chunk.byteLength;
          pendingTotal += chunk.byteLength;
          // Bounded, per client and in all: a client that floods before its tunnel is open (or while the host is being reconnected) waits.
          if (socket.data.pendingBytes > LOCAL_PENDING_MAX_BYTES || pendingTotal > LOCAL_PENDING_TOTAL_MAX_BYTES) socket.pause();
        },
        drain(socket) {
          const local = socket.data;
          local.backlog.drain(socket);
          if (local.backlog.bytes <= LOCAL_BACKLOG_HOLD_BYTES) release(local);
          if (local.endWhenDrained && local.backlog.bytes === 0) socket.end();
        },
        end(socket) {
          const local = socket.data;
          if (local.closed || local.finished) return;
          local.finished = true;
          // After its tunnel/writes on the same connection: the far side reads every byte, then EOF.
          if (local.tunnelId !== undefined && byTunnel.has(local.tunnelId)) void send("tunnel/close", { tunnelId: local.tunnelId, halfClose: true });
        },
        close(socket) {
          socket.data.closed = true;
          release(socket.data);
          takePending(socket.data); // nobody left to send it for
          const { tunnelId } = socket.data;
          if (tunnelId !== undefined && byTunnel.delete(tunnelId)) void send("tunnel/close", { tunnelId });
        },
      },
    });
  } catch (error) {
    await conn.close();
    throw new BerthError("USAGE", `cannot listen on ${spec.localHost}:${spec.localPort}: ${(error as Error).message}`);
  }
  return {
    streaming: true,
    firstLine: { status: "forwarding", host, local: `${spec.localHost}:${listener.port}`, remote: `${spec.remoteHost}:${spec.remotePort}` },
    async run() {
      await new Promise<void>((resolve) => {
        for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(signal, () => resolve());
      });
      stopping = true;
      stopped.abort();
      reconnected?.resolve();
      listener.stop(true);
      await conn.close();
      return 0;
    },
  };
}
