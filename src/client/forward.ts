/**
 * `berth remote HOST forward [LOCALHOST:]LOCALPORT:REMOTEHOST:REMOTEPORT`:
 * a local TCP listener whose connections are carried by `tunnel/*` inside
 * the berth connection (so it works where sshd forbids port forwarding).
 * Its JSON line comes once it listens (a StreamingResult for cli.ts); it then
 * runs until SIGINT/SIGTERM/SIGHUP and exits 0. When
 * the connection drops, open tunnels end and it reconnects with backoff.
 */
import type { Socket, TCPSocketListener } from "bun";
import { BerthError } from "../errors.ts";
import type { StreamingResult } from "../streaming.ts";
import type { Forward } from "./args.ts";
import { reusableBase64Decoder } from "../rpc-data.ts";
import { connect, type Connection } from "./connection.ts";
import { SocketQueue } from "./socket-queue.ts";
import { reconnectDelayMs } from "./offsets.ts";

/** Bytes from the far side waiting for a slow local socket; past this the local socket is closed. */
const LOCAL_BACKLOG_MAX_BYTES = 8 * 1024 * 1024;

type Local = { tunnelId?: string; pending: Uint8Array[]; backlog: SocketQueue; closed: boolean };

export async function forward(host: string, spec: Forward): Promise<StreamingResult> {
  const decode = reusableBase64Decoder();
  let conn: Connection = await connect(host);
  const byTunnel = new Map<string, Socket<Local>>();
  let stopping = false;

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
  let listener: TCPSocketListener<Local>;
  try {
    listener = Bun.listen<Local>({
      hostname: spec.localHost,
      port: spec.localPort,
      socket: {
        open(socket) {
          socket.data = { pending: [], backlog: new SocketQueue(), closed: false };
          conn
            .call<{ tunnelId: string }>("tunnel/open", { host: spec.remoteHost, port: spec.remotePort })
            .then(({ tunnelId }) => {
              if (socket.data.closed) return void send("tunnel/close", { tunnelId });
              socket.data.tunnelId = tunnelId;
              byTunnel.set(tunnelId, socket);
              for (const chunk of socket.data.pending.splice(0)) void write(tunnelId, chunk);
            })
            .catch((error) => {
              process.stderr.write(`berth: ${host} refused the tunnel to ${spec.remoteHost}:${spec.remotePort}: ${(error as Error).message}\n`);
              socket.end();
            });
        },
        data(socket, chunk) {
          const { tunnelId } = socket.data;
          if (tunnelId === undefined) socket.data.pending.push(new Uint8Array(chunk));
          else void write(tunnelId, chunk);
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
      listener.stop(true);
      await conn.close();
      return 0;
    },
  };
}
