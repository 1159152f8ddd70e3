/**
 * `berth remote HOST forward [LOCALHOST:]LOCALPORT:REMOTEHOST:REMOTEPORT`:
 * a local TCP listener whose connections are carried by `tunnel/*` inside
 * the berth connection (so it works where sshd forbids port forwarding).
 * Its JSON line comes once it listens (a StreamingResult for cli.ts); it then
 * runs until SIGINT/SIGTERM/SIGHUP and exits 0. When
 * the connection drops, open tunnels end and it reconnects with backoff; a
 * local connection made meanwhile waits for the new connection (up to
 * RECONNECT_WAIT_MS) instead of being refused.
 */
import type { Socket, TCPSocketListener } from "bun";
import { BerthError } from "../errors.ts";
import type { StreamingResult } from "../streaming.ts";
import type { Forward } from "./args.ts";
import { reusableBase64Decoder } from "../rpc-data.ts";
import { connect, ConnectionClosed, type Connection } from "./connection.ts";
import { SocketQueue } from "./socket-queue.ts";
import { reconnectDelayMs } from "./offsets.ts";

/** Bytes from the far side waiting for a slow local socket; past this the local socket is closed. */
const LOCAL_BACKLOG_MAX_BYTES = 8 * 1024 * 1024;
/** Bytes a local client sends before its tunnel is open; past this its socket is paused until the tunnel opens. */
const LOCAL_PENDING_MAX_BYTES = 1024 * 1024;
/** How long a local connection waits for a lost connection to the host to come back before it is refused. */
const RECONNECT_WAIT_MS = 30_000;

type Local = { tunnelId?: string; pending: Uint8Array[]; pendingBytes: number; backlog: SocketQueue; closed: boolean };

export async function forward(host: string, spec: Forward): Promise<StreamingResult> {
  const decode = reusableBase64Decoder();
  let conn: Connection = await connect(host);
  const byTunnel = new Map<string, Socket<Local>>();
  let stopping = false;
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
      if (!socket) return;
      // decode() reuses its buffer; the queue copies what the socket does not take.
      if (socket.data.backlog.push(socket, decode(p.data)) > LOCAL_BACKLOG_MAX_BYTES) socket.end();
    });
    c.on("tunnel/closed", (p: { tunnelId: string }) => {
      byTunnel.get(p.tunnelId)?.end();
      byTunnel.delete(p.tunnelId);
    });
    void c.closed.then(async () => {
      for (const socket of byTunnel.values()) socket.end();
      byTunnel.clear();
      if (stopping || c !== conn) return;
      process.stderr.write(`berth: connection to ${host} lost; reconnecting…\n`);
      for (let attempt = 0; !stopping; attempt += 1) {
        await Bun.sleep(reconnectDelayMs(attempt));
        try {
          conn = await connect(host);
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

  const send = (method: string, params: object) => conn.call(method, params).catch(() => undefined);
  const write = (tunnelId: string, bytes: Uint8Array) => conn.callData("tunnel/write", { tunnelId }, bytes).catch(() => undefined);
  /** tunnel/open for a new local socket, on the live connection; a connection lost meanwhile is waited for, then tried again. */
  const openTunnel = async (socket: Socket<Local>): Promise<void> => {
    const deadline = Date.now() + RECONNECT_WAIT_MS;
    for (;;) {
      const c = await liveConnection(deadline);
      if (!c || socket.data.closed) {
        if (c === undefined && !stopping) process.stderr.write(`berth: no connection to ${host} within ${RECONNECT_WAIT_MS / 1000} s; a local connection was closed\n`);
        return void socket.end();
      }
      try {
        const { tunnelId } = await c.call<{ tunnelId: string }>("tunnel/open", { host: spec.remoteHost, port: spec.remotePort });
        if (socket.data.closed) return void send("tunnel/close", { tunnelId });
        // Opened just as the connection died: that tunnel is gone with it; the data is still here, open another.
        if (c.isClosed) continue;
        socket.data.tunnelId = tunnelId;
        byTunnel.set(tunnelId, socket);
        for (const chunk of socket.data.pending.splice(0)) void write(tunnelId, chunk);
        socket.data.pendingBytes = 0;
        socket.resume();
        return;
      } catch (error) {
        if (error instanceof ConnectionClosed) continue;
        process.stderr.write(`berth: ${host} refused the tunnel to ${spec.remoteHost}:${spec.remotePort}: ${(error as Error).message}\n`);
        return void socket.end();
      }
    }
  };

  let listener: TCPSocketListener<Local>;
  try {
    listener = Bun.listen<Local>({
      hostname: spec.localHost,
      port: spec.localPort,
      socket: {
        open(socket) {
          socket.data = { pending: [], pendingBytes: 0, backlog: new SocketQueue(), closed: false };
          void openTunnel(socket);
        },
        data(socket, chunk) {
          const { tunnelId } = socket.data;
          if (tunnelId !== undefined) return void write(tunnelId, chunk);
          socket.data.pending.push(new Uint8Array(chunk));
          socket.data.pendingBytes += chunk.byteLength;
          // Bounded: a client that floods before its tunnel is open (or while the host is being reconnected) waits.
          if (socket.data.pendingBytes > LOCAL_PENDING_MAX_BYTES) socket.pause();
        },
        drain(socket) {
          socket.data.backlog.drain(socket);
        },
        close(socket) {
          socket.data.closed = true;
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
      reconnected?.resolve();
      listener.stop(true);
      await conn.close();
      return 0;
    },
  };
}
