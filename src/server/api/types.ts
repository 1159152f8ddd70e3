/**
 * The contract every API family (`process.ts`, `fs.ts`, `system.ts`,
 * `tunnel.ts`) is written against: a table of methods, each with one params
 * check and one handler. A handler never touches a socket: it returns a
 * result, throws an `ApiError`, or emits through the `Conn` it is given.
 */

/** JSON-RPC error codes of the spec ("The app-server API"). */
export const API_INVALID_PARAMS = -32602;
export const API_NOT_FOUND = -32004;
export const API_PERMISSION_DENIED = -32003;
export const API_LIMIT = -32001;
export const API_INTERNAL = -32603;

/** A failure a client can act on: the stable code, a message naming what was wrong, optional data (`{errno}`). */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** One client connection as the API families see it. */
export interface Conn {
  /** Unique per server run; stable for the connection's life. */
  readonly id: number;
  /** Queues a notification for this client (counted in its backlog). */
  notify(method: string, params: unknown): void;
  /**
   * Queues the notification `{method, params: {...params, data: base64 of bytes}}`,
   * its text built around the base64 (no JSON.stringify over the bulk).
   */
  notifyData(method: string, params: Record<string, unknown>, bytes: Uint8Array): void;
  /** Bytes queued for this client and not yet written to its socket. */
  backlog(): number;
  /** Runs `listener` whenever the backlog drains; returns the unsubscribe. */
  onDrain(listener: () => void): () => void;
  /**
   * Runs `cleanup` once when the connection closes (detach, unwatch, close
   * tunnels); returns the unsubscribe, to call when the thing ends first (a
   * long-lived connection must not keep every ended thing alive).
   */
  onClose(cleanup: () => void): () => void;
  readonly closed: boolean;
  /** Closes the connection with a WebSocket close code (e.g. 1008 past a backlog cap); the client reconnects. */
  close?(code: number, reason: string): void;
}

export type Method<P = any> = {
  /** Checks and normalises raw params; throws ApiError(API_INVALID_PARAMS) naming the bad param. */
  params: (raw: unknown) => P;
  handle: (params: P, conn: Conn) => unknown | Promise<unknown>;
  /**
   * The reply may be withheld for flow control (tunnel/write) while the family
   * bounds what the call holds itself: it does not count toward the
   * connection's requests in flight (conn.ts), so it cannot block the others.
   */
  flowControlled?: boolean;
};

export type MethodTable = Record<string, Method>;

/** An API family as the server composes it: its methods and what it must do on shutdown. */
export type ApiFamily = {
  methods: MethodTable;
  /** Called once when the app-server stops; may end processes, close sockets. */
  shutdown?: () => Promise<Record<string, unknown> | void>;
};

/** Keeps the param type of each method while building a table. */
export function method<P>(params: (raw: unknown) => P, handle: (params: P, conn: Conn) => unknown | Promise<unknown>): Method<P> {
  return { params, handle };
}
