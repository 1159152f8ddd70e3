/**
 * The app-server: JSON-RPC over WebSocket on the Unix control socket, and with
 * remote control the same API on TCP behind a bearer token.
 */
import { chmodSync, lstatSync, mkdirSync, rmSync, statSync } from "node:fs";
import { release, type } from "node:os";
import { dirname, join } from "node:path";
import type { Server, ServerWebSocket } from "bun";
import { BerthError, describeError } from "../errors.ts";
import { CLI_VERSION } from "../version.ts";
import { createApi } from "./api/index.ts";
import { runMethod } from "./api/dispatch.ts";
import { SocketConn, UNIX_SEND_BUFFER_BYTES } from "./conn.ts";
import { logger } from "../output.ts";
import { routeRpcText, type InitializeResult, type Session } from "./protocol.ts";
import { idleTrimmer } from "./idle-trim.ts";

/** Frames larger than this close the offending connection (spec: 1 MiB). */
export const MAX_FRAME_BYTES = 1024 * 1024;
const SOCKET_PROBE_TIMEOUT_MS = 1_000;
/** Concurrent connections served; the next upgrade gets 503 (each may hold up to 8 MiB of backlog). */
export const MAX_CONNECTIONS = 512;
/** Bun drops sends past its own limit; ours (8 MiB, conn.ts) must always act first. */
const BUN_BACKPRESSURE_LIMIT_BYTES = 64 * 1024 * 1024;

export type ServeOptions = {
  socketPath: string;
  berthHome: string;
  remoteControl?: { listen: string; token: string; tls?: { cert: string; key: string } };
  /** Loaded settings (processes.*, tunnels.*); defaults apply where absent. */
  settings?: Record<string, unknown>;
  /** The real daemon (`berth serve`): orphans of session processes are re-parented to it (process/orphans.ts). */
  adoptOrphans?: boolean;
};

/** Per-connection state: the protocol session plus the API's view of the connection. */
type Client = Session & { conn?: SocketConn };

export type RunningServer = {
  identity: () => InitializeResult;
  /** Stops accepting, closes connections, removes the socket file, then ends what the API families own. */
  shutdown(): void;
  /** What the API families reported when they shut down (e.g. processesEnded). */
  shutdownReport: Promise<Record<string, unknown>>;
  closed: Promise<void>;
};

export function userAgent(): string {
  return `berth/${CLI_VERSION} (${type()} ${release()}; ${process.arch})`;
}

/** Removes a socket file nobody answers on; refuses to take over one that answers. */
async function claimSocketPath(socketPath: string): Promise<void> {
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
  // Not thrown when absent (the usual case): a thrown fs error costs the app-server ~0.7 MB resident for good (bench/README.md).
  const entry = lstatSync(socketPath, { throwIfNoEntry: false });
  if (!entry) return;
  // Only a leftover socket is ours to replace: never unlink a file, link or folder that sits where we bind.
  if (!entry.isSocket()) {
    throw new BerthError("START_FAILED", `${socketPath} exists and is not a socket; berth only replaces a leftover socket. Move it away or listen elsewhere.`);
  }
  // The client is loaded only here: a clean start finds no socket and never needs it.
  if (await (await import("./client.ts")).socketAcceptsConnections(socketPath, SOCKET_PROBE_TIMEOUT_MS)) {
    throw new BerthError("START_FAILED", `another server already answers on ${socketPath}; stop it first (berth stop).`);
  }
  rmSync(socketPath, { force: true });
}

/**
 * What the socket path holds now: the socket we bound (by inode), nothing, or something else.
 * lstat, not stat: a symlink there is someone's file, never ours, even when it points at our socket;
 * followed, a dangling link or a loop read as "nothing" and a link to our socket as "ours", and stop() unlinked it.
 */
function socketPathHolds(socketPath: string, inode: number): "ours" | "nothing" | "other" {
  try {
    const entry = lstatSync(socketPath, { throwIfNoEntry: false });
    if (!entry) return "nothing";
    return entry.ino === inode ? "ours" : "other";
  } catch {
    return "nothing"; // unreadable now: nothing we may remove
  }
}

export async function startServer(options: ServeOptions): Promise<RunningServer> {
  await claimSocketPath(options.socketPath);
  // Loaded before anything listens, and only for remote control: the Unix socket alone needs no token.
  const tokens = options.remoteControl ? await import("./token.ts") : undefined;
  const startedAt = new Date().toISOString();
  const instanceId = crypto.randomUUID();
  let remoteUrl: string | undefined;
  const identity = (): InitializeResult => ({
    userAgent: userAgent(),
    serverInfo: { name: "berth", version: CLI_VERSION },
    pid: process.pid,
    instanceId,
    berthHome: options.berthHome,
    startedAt,
    remoteControl: { enabled: Boolean(options.remoteControl), ...(remoteUrl ? { url: remoteUrl } : {}) },
  });

  const api = await createApi({ settings: options.settings ?? {}, stateDir: join(options.berthHome, "daemon"), ...(options.adoptOrphans ? { adoptOrphans: true } : {}) });
  let nextConnId = 1;
  let connections = 0;
  /** Every open WebSocket, so a shutdown that must not call the Unix server's stop() can still end them. */
  const open = new Set<ServerWebSocket<Client>>();
  // Every client event below touches it: the executable's idle pages are unmapped only after a quiet period.
  const idle = idleTrimmer(Number(options.settings?.idleTrimAfterMs ?? 0));
  const touch = () => idle.touch();
  const onText = (ws: ServerWebSocket<Client>, text: string): Promise<unknown> | undefined => {
    const conn = ws.data.conn as SocketConn;
    const routed = routeRpcText(text, ws.data, identity, api.methods);
    if (routed.kind === "reply") conn.send(JSON.stringify(routed.reply));
    else if (routed.kind === "call") {
      // Returned so the connection counts the request in flight until its reply is sent.
      const done = runMethod(routed.id, routed.method, routed.entry, routed.params, conn, (method, error) =>
        logger.error(`${method} failed:`, error),
      ).then((reply) => {
        if (reply) conn.send(JSON.stringify(reply));
      });
      return routed.entry.flowControlled ? undefined : done;
    }
    return undefined;
  };
  const websocket = {
    maxPayloadLength: MAX_FRAME_BYTES,
    backpressureLimit: BUN_BACKPRESSURE_LIMIT_BYTES,
    closeOnBackpressureLimit: false,
    idleTimeout: 0,
    open(ws: ServerWebSocket<Client>) {
      // On its first backlog, a bulk connection gets a bigger kernel send buffer (a TCP one finds nothing on the path).
      // bun:ffi is loaded then, not at start: an idle app-server never needs it (bench/README.md, 0.2 MB).
      const widen = () => void import("../platform/ffi.ts").then((ffi) => ffi.raiseUnixSendBuffers(options.socketPath, UNIX_SEND_BUFFER_BYTES));
      touch();
      ws.data = { initialized: false, conn: new SocketConn(nextConnId++, ws, (text) => onText(ws, text), widen, touch) };
      open.add(ws);
    },
    message(ws: ServerWebSocket<Client>, message: string | Buffer) {
      touch();
      const conn = ws.data.conn as SocketConn;
      if (typeof message !== "string") {
        conn.send(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32700, message: "parse error: binary frames are not JSON-RPC" } }));
        return;
      }
      conn.receive(message);
    },
    drain(ws: ServerWebSocket<Client>) {
      touch();
      ws.data.conn?.drained();
    },
    close(ws: ServerWebSocket<Client>) {
      touch();
      open.delete(ws);
      connections -= 1;
      ws.data.conn?.closedNow();
    },
  };
  const upgrade = (request: Request, server: Server<Client>): Response | undefined => {
    touch();
    if (new URL(request.url).pathname !== "/") return new Response("not found\n", { status: 404 });
    if (connections >= MAX_CONNECTIONS) {
      return new Response(`berth app-server: ${MAX_CONNECTIONS} connections already open; try again later\n`, { status: 503, headers: { "retry-after": "1" } });
    }
    if (server.upgrade(request, { data: { initialized: false } })) {
      connections += 1;
      return undefined;
    }
    return new Response("berth app-server: WebSocket upgrade required\n", { status: 426 });
  };

  const unixServer = Bun.serve<Client>({ unix: options.socketPath, fetch: upgrade, websocket });
  chmodSync(options.socketPath, 0o600);
  const socketInode = statSync(options.socketPath).ino;

  // Remote control: a front door of our own (remote-front.ts) takes the TCP connections, bounds those that have not
  // authenticated yet, and pipes the authenticated ones to the Unix server above (which counts them like any other).
  let tcpFront: { stop(): void } | undefined;
  if (options.remoteControl && tokens) {
    const { hostname, port } = tokens.parseListen(options.remoteControl.listen);
    try {
      const { startRemoteFront } = await import("./remote-front.ts");
      const front = startRemoteFront({
        hostname,
        port,
        token: options.remoteControl.token,
        unixPath: options.socketPath,
        ...(options.remoteControl.tls ? { tls: options.remoteControl.tls } : {}),
      });
      tcpFront = front;
      const host = front.hostname.includes(":") ? `[${front.hostname}]` : front.hostname;
      remoteUrl = `${options.remoteControl.tls ? "wss" : "ws"}://${host}:${front.port}/`;
    } catch (error) {
      unixServer.stop(true);
      rmSync(options.socketPath, { force: true });
      throw new BerthError("START_FAILED", `cannot listen on ${options.remoteControl.listen} for remote control: ${(error as Error).message}`);
    }
  }

  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => (resolveClosed = resolve));
  let stopping = false;
  let reportShutdown!: (report: Record<string, unknown>) => void;
  const shutdownReport = new Promise<Record<string, unknown>>((resolve) => (reportShutdown = resolve));
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    idle.dispose();
    tcpFront?.stop();
    // Bun's stop() unlinks the path it bound, whatever is there by then (checked with Bun 1.4.5): it is called
    // only while the path holds our socket (or nothing). When a successor has bound the path, our listener is
    // out of reach; its connections are ended one by one and the exit closes it, leaving the path alone.
    if (socketPathHolds(options.socketPath, socketInode) !== "other") unixServer.stop(true);
    else for (const ws of open) ws.terminate();
    // Remove the socket only if it is still the one we bound (a successor may own the path). A home remounted
    // read-only keeps it (the next start removes a socket nobody answers on): the sessions are ended all the same.
    try {
      if (socketPathHolds(options.socketPath, socketInode) === "ours") rmSync(options.socketPath, { force: true });
    } catch (error) {
      logger.warn(`could not remove the socket ${options.socketPath}: ${describeError(error)}`);
    }
    api.shutdown().then(
      (report) => reportShutdown(report),
      (error) => {
        logger.error("shutting down the API failed:", error);
        reportShutdown({});
      },
    ).finally(resolveClosed);
  };
  return { identity, shutdown, closed, shutdownReport };
}
