/**
 * Following one remote process across dropped connections: attach, deliver
 * its output exactly once (by byte offsets), and when ssh dies, reconnect
 * with backoff and re-attach from the offsets already delivered.
 *
 * ```ts
 * const follower = await followProcess({
 *   open: () => connect("myhost"),
 *   first: (conn) => conn.call("process/spawn", { argv: ["make"] }).then((r) => r.process),
 *   onOutput: (stream, bytes) => …, onNotice: (text) => …,
 * });
 * follower.write(bytes); follower.resize(cols, rows);
 * const outcome = await follower.done;   // {kind: "exited", exitCode, signal} | {kind: "detached"} | {kind: "lost"}
 * ```
 */
import { BerthError } from "../errors.ts";
import { ConnectionClosed, RpcError, type Connection } from "./connection.ts";
import { OffsetTracker, reconnectDelayMs } from "./offsets.ts";

/** Keystrokes typed while disconnected are kept up to this and sent after the reconnect. */
const OFFLINE_INPUT_MAX_BYTES = 64 * 1024;
/** Output notifications that arrive before the spawn/attach answer names our process, at most. */
const EARLY_MAX_ITEMS = 1_024;
const API_NOT_FOUND = -32004;

export type RemoteProcess = {
  processId: string;
  name?: string;
  argv: string[];
  pid: number;
  terminal: { cols: number; rows: number } | null;
  state: "running" | "exited";
  exitCode?: number | null;
  signal?: string | null;
  streams: Record<string, { start: number; end: number }>;
};

export type Outcome =
  | { kind: "exited"; exitCode: number | null; signal: string | null }
  | { kind: "detached" }
  | { kind: "lost"; reason: string };

export type FollowOptions = {
  open: () => Promise<Connection>;
  /** The first attach or spawn on a fresh connection; returns the process object of the answer. */
  first: (conn: Connection) => Promise<RemoteProcess>;
  /** Delivers output; a returned promise holds reading from the host until it settles (backpressure). */
  onOutput: (stream: string, data: Uint8Array) => void | Promise<unknown>;
  /** One-line human notices (connection lost, reconnected); the caller prints them on stderr. */
  onNotice?: (text: string) => void;
  /** Runs after every (re)attach, e.g. to send the current window size. */
  onAttached?: (process: RemoteProcess) => void;
  /** The connection already opened by the caller (so failure to start is reported before anything). */
  connection?: Connection;
};

export type Follower = {
  readonly process: RemoteProcess;
  readonly connection: Connection;
  write(data: Uint8Array): void;
  resize(cols: number, rows: number): void;
  signal(signal: string): void;
  /** process/detach, then close the connection. */
  detach(): Promise<void>;
  done: Promise<Outcome>;
};

const decode = (data: string) => new Uint8Array(Buffer.from(data, "base64"));
const encode = (data: Uint8Array) => Buffer.from(data).toString("base64");

export async function followProcess(options: FollowOptions): Promise<Follower> {
  const tracker = new OffsetTracker();
  let conn = options.connection ?? (await options.open());
  let processId: string | undefined;
  let current!: RemoteProcess;
  let finished = false;
  let settle!: (outcome: Outcome) => void;
  const done = new Promise<Outcome>((resolve) => (settle = resolve));
  const offline: Uint8Array[] = [];
  /** Set when an attach found the process already exited: finish once its output is all delivered. */
  let exitedAt: { ends: Record<string, number>; outcome: Outcome } | undefined;
  let offlineBytes = 0;
  const early: { stream: string; offset: number; data: string; processId: string }[] = [];
  /** False from a drop until the re-attach has sent the keys typed meanwhile, so keys keep their order. */
  let online = true;

  const finish = (outcome: Outcome) => {
    if (finished) return;
    finished = true;
    settle(outcome);
    void conn.close();
  };

  const deliver = (p: { processId: string; stream: string; offset: number; data: string }) => {
    const { fresh, lost } = tracker.accept(p.stream, p.offset, decode(p.data));
    if (lost > 0) options.onNotice?.(`${lost} bytes of ${p.stream} were no longer kept on the host`);
    if (fresh.length > 0) {
      const drained = options.onOutput(p.stream, fresh);
      if (drained) conn.holdReading(drained);
    }
    if (exitedAt && tracker.reached(exitedAt.ends)) finish(exitedAt.outcome);
  };

  /** Subscribes on a connection before any call, so no notification is missed. */
  const wire = (c: Connection) => {
    c.on("process/output", (p) => {
      if (processId === undefined) {
        if (early.length < EARLY_MAX_ITEMS) early.push(p);
      } else if (p.processId === processId) deliver(p);
    });
    c.on("process/exited", (p) => {
      if (p.processId === processId) finish({ kind: "exited", exitCode: p.exitCode ?? null, signal: p.signal ?? null });
    });
    void c.closed.then(() => {
      if (!finished && c === conn) void reconnect();
    });
  };

  const attached = (process: RemoteProcess) => {
    current = process;
    processId = process.processId;
    for (const p of early.splice(0)) if (p.processId === processId) deliver(p);
    for (const data of offline.splice(0)) send("process/write", { processId, data: encode(data) });
    offlineBytes = 0;
    online = true;
    options.onAttached?.(process);
    const ends = Object.fromEntries(Object.entries(process.streams).map(([stream, range]) => [stream, range.end]));
    if (process.state !== "exited") return;
    exitedAt = { ends, outcome: { kind: "exited", exitCode: process.exitCode ?? null, signal: process.signal ?? null } };
    if (tracker.reached(ends)) finish(exitedAt.outcome);
  };

  const keepOffline = (data: Uint8Array) => {
    if (offlineBytes + data.length > OFFLINE_INPUT_MAX_BYTES) return;
    offline.push(data);
    offlineBytes += data.length;
  };

  const send = (method: string, params: object) => {
    if (conn.isClosed) return;
    conn.call(method, params).catch(() => {
      // a lost connection is handled by reconnect; a refused write has nowhere to go
    });
  };

  async function reconnect(): Promise<void> {
    online = false;
    options.onNotice?.(`connection to ${conn.host} lost; reconnecting…`);
    // The first try is immediate: a killed ssh on a working network is back at once.
    for (let attempt = 0; !finished; attempt += 1) {
      await Bun.sleep(reconnectDelayMs(attempt));
      if (finished) return;
      let next: Connection;
      try {
        next = await options.open();
      } catch (error) {
        if (error instanceof BerthError && (error.code === "NOT_INSTALLED" || error.code === "UNSUPPORTED_PLATFORM")) {
          finish({ kind: "lost", reason: error.message });
          return;
        }
        continue;
      }
      conn = next;
      wire(next);
      try {
        attached(await next.call<{ process: RemoteProcess }>("process/attach", { processId, since: tracker.since() }).then((r) => r.process));
        options.onNotice?.(`reconnected to ${conn.host}`);
        return;
      } catch (error) {
        if (error instanceof RpcError && error.code === API_NOT_FOUND) {
          finish({ kind: "lost", reason: `the process ${processId} is gone from ${conn.host}` });
          return;
        }
        if (!(error instanceof ConnectionClosed)) next.kill();
        return; // the closed connection starts the next round
      }
    }
  }

  wire(conn);
  try {
    attached(await options.first(conn));
  } catch (error) {
    finished = true;
    await conn.close();
    throw error;
  }

  return {
    get process() {
      return current;
    },
    get connection() {
      return conn;
    },
    write(data) {
      if (finished || data.length === 0) return;
      if (!online || conn.isClosed) return keepOffline(data);
      // A write the server did not answer (the connection died before we noticed: EPIPE, closed)
      // is sent again after the reconnect; a refusal by the server (RpcError) is final.
      conn.call("process/write", { processId, data: encode(data) }).catch((error) => {
        if (!(error instanceof RpcError)) keepOffline(data);
      });
    },
    resize(cols, rows) {
      send("process/resize", { processId, cols, rows });
    },
    signal(signal) {
      send("process/signal", { processId, signal });
    },
    async detach() {
      if (finished) return;
      if (!conn.isClosed) await conn.call("process/detach", { processId }).catch(() => undefined);
      finish({ kind: "detached" });
      await conn.closed;
    },
    done,
  };
}
