/**
 * tunnel/*: TCP forwarding inside the API connection, for hosts whose sshd
 * forbids port forwarding. Bytes from the TCP socket go out as tunnel/data;
 * reading stops while the connection's backlog is over 1 MiB and resumes when
 * it drains. Writes queue per tunnel up to a bound. Tunnels end with their
 * connection. Closing, half-closing and the queues: tunnel-socket.ts.
 */
import { describeError } from "../../errors.ts";
import { arrayOf, base64Transient, bool, int, nonEmptyStr, optional, params, str } from "./params.ts";
import { Tunnel, type WriteAccount } from "./tunnel-socket.ts";
import { API_LIMIT, API_NOT_FOUND, API_PERMISSION_DENIED, ApiError, method, type ApiFamily, type Conn } from "./types.ts";

export const CONNECT_TIMEOUT_MS = 10_000;
export const TUNNELS_PER_CONNECTION_MAX = 256;
export const DEFAULT_ALLOW_HOSTS = ["127.0.0.1", "::1", "localhost"];

/**
 * Whether `host` may be tunnelled to: an exact (case-insensitive) member of
 * the allow list; brackets around IPv6 ignored. The host is not trimmed: it
 * is what gets resolved, and " localhost" is a DNS question, not localhost.
 */
export function hostAllowed(host: string, allowHosts: readonly string[]): boolean {
  const bare = (h: string) => h.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  return allowHosts.some((allowed) => bare(allowed.trim()) === bare(host));
}

/** tunnels.allowHosts from settings, or the loopback default when absent. */
export function allowHostsOf(settings: Record<string, unknown>): string[] {
  const tunnels = settings.tunnels as { allowHosts?: unknown } | undefined;
  if (tunnels?.allowHosts === undefined) return DEFAULT_ALLOW_HOSTS;
  return arrayOf(str)(tunnels.allowHosts, "settings tunnels.allowHosts");
}

function connectFailure(host: string, port: number, error: unknown): ApiError {
  const errno = (error as { code?: unknown })?.code;
  const data = typeof errno === "string" ? { errno } : undefined;
  const code = errno === "ETIMEDOUT" ? API_LIMIT : API_NOT_FOUND;
  return new ApiError(code, `cannot connect to ${host}:${port}: ${describeError(error)}`, data);
}

export function createTunnelApi(settings: Record<string, unknown>): ApiFamily {
  const allowHosts = allowHostsOf(settings);
  const tunnels = new Map<string, Tunnel>();
  const perConn = new Map<number, number>();
  /** By connection object: gone with it, while its closing tunnels (which hold it) still flush. */
  const accounts = new WeakMap<Conn, WriteAccount>();
  const accountOf = (conn: Conn): WriteAccount => {
    let account = accounts.get(conn);
    if (!account) accounts.set(conn, (account = { queued: 0 }));
    return account;
  };
  let nextId = 1;

  const forget = (tunnel: Tunnel) => {
    tunnels.delete(tunnel.id);
    release(tunnel.conn.id);
  };
  /** One tunnel of connection `connId` ended (or failed to open); a connection with none leaves no entry. */
  const release = (connId: number) => {
    const left = (perConn.get(connId) ?? 1) - 1;
    if (left > 0) perConn.set(connId, left);
    else perConn.delete(connId);
  };

  const open = async (host: string, port: number, conn: Conn) => {
    if (!hostAllowed(host, allowHosts)) {
      throw new ApiError(API_PERMISSION_DENIED, `tunnels to ${host} are not allowed; allowed hosts: ${allowHosts.join(", ")} (settings tunnels.allowHosts)`);
    }
    if ((perConn.get(conn.id) ?? 0) >= TUNNELS_PER_CONNECTION_MAX) {
      throw new ApiError(API_LIMIT, `this connection already has ${TUNNELS_PER_CONNECTION_MAX} tunnels; close some first`);
    }
    perConn.set(conn.id, (perConn.get(conn.id) ?? 0) + 1); // reserved now, so concurrent opens cannot pass the cap
    const tunnel = new Tunnel(`t${nextId++}`, conn, forget, accountOf(conn));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const connecting = Bun.connect({
      hostname: host,
      port,
      socket: {
        open: (socket) => socket.pause(),
        data: (_socket, data) => tunnel.received(data),
        drain: () => tunnel.flush(),
        end: () => tunnel.finish("remote"),
        close: () => {
          tunnel.dropQueue();
          tunnel.finish("remote");
        },
        error: (_socket, error) => tunnel.finish("error", describeError(error)),
      },
    });
    try {
      tunnel.socket = await Promise.race([
        connecting,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(Object.assign(new Error(`timed out after ${CONNECT_TIMEOUT_MS} ms`), { code: "ETIMEDOUT" })), CONNECT_TIMEOUT_MS);
        }),
      ]);
    } catch (error) {
      release(conn.id);
      connecting.then((socket) => socket.terminate(), () => {});
      throw connectFailure(host, port, error);
    } finally {
      clearTimeout(timer);
    }
    tunnels.set(tunnel.id, tunnel);
    tunnel.stopDrainListener = conn.onDrain(() => tunnel.clientDrained());
    tunnel.stopCloseListener = conn.onClose(() => tunnel.finish("shutdown")); // runs at once if the connection is already gone
    // The reply is sent in a microtask after this returns; setImmediate comes after it.
    setImmediate(() => tunnel.start());
    return { tunnelId: tunnel.id };
  };

  const find = (id: string, conn: Conn): Tunnel => {
    const tunnel = tunnels.get(id);
    if (!tunnel || tunnel.conn.id !== conn.id) throw new ApiError(API_NOT_FOUND, `no open tunnel ${JSON.stringify(id)} on this connection`);
    return tunnel;
  };

  return {
    methods: {
      "tunnel/open": method(params({ host: nonEmptyStr, port: int(1, 65_535) }), (p, conn) => open(p.host, p.port, conn)),
      "tunnel/write": {
        // Transient bytes: Tunnel.write writes them at once and copies only what the socket leaves.
        ...method(params({ tunnelId: nonEmptyStr, data: base64Transient }), async (p, conn) => {
          await find(p.tunnelId, conn).write(p.data);
          return {};
        }),
        flowControlled: true, // its data is in the tunnel's queue, bounded there
      },
      "tunnel/close": method(params({ tunnelId: nonEmptyStr, halfClose: optional(bool) }), (p, conn) => {
        const tunnel = find(p.tunnelId, conn);
        if (p.halfClose) tunnel.halfCloseFromClient();
        else tunnel.endFromClient();
        return {};
      }),
    },
    shutdown: async () => {
      for (const tunnel of [...tunnels.values()]) tunnel.finish("shutdown");
    },
  };
}
