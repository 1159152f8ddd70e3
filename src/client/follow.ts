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
 * const hold = follower.write(bytes);    // a promise: read no more input until it settles
 * follower.resize(cols, rows);
 * const outcome = await follower.done;   // {kind: "exited", exitCode, signal} | {kind: "detached"} | {kind: "lost"} | {kind: "inputRefused"}
 * ```
 *
 * Input goes through an ordered queue (input.ts): kept while the connection
 * is down and sent after the re-attach, offered again while the process's
 * unread input is over the host's bound, and never dropped without a word.
 */
import { BerthError } from "../errors.ts";
import { ConnectionClosed, RpcError, type Connection } from "./connection.ts";
import { InputPump, type InputLimits } from "./input.ts";
import { OffsetTracker, reconnectDelayMs } from "./offsets.ts";

/** A detach first lets the input typed before it reach the process, for at most this long. */
const DETACH_INPUT_FLUSH_MS = 5_000;
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
  | { kind: "lost"; reason: string }
  /** The process read none of its input for too long: the follower detached; it keeps running. */
  | { kind: "inputRefused"; reason: string };

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
  /** The input queue's deadlines and bound (defaults: input.ts). */
  inputLimits?: InputLimits;
};

export type Follower = {
  readonly process: RemoteProcess;
  readonly connection: Connection;
  /** True once `done` has settled (or is about to): input written now is not taken. */
  readonly finished: boolean;
  /** Queues input, sent in order; a returned promise means: read no more input until it settles. */
  write(data: Uint8Array): Promise<void> | undefined;
  resize(cols: number, rows: number): void;
  signal(signal: string): void;
  /** process/detach, then close the connection. */
  detach(): Promise<void>;
  done: Promise<Outcome>;
};

const decode = (data: string) => new Uint8Array(Buffer.from(data, "base64"));

export async function followProcess(options: FollowOptions): Promise<Follower> {
  const tracker = new OffsetTracker();
  let conn = options.connection ?? (await options.open());
  let processId: string | undefined;
  let current!: RemoteProcess;
  let finished = false;
  let settle!: (outcome: Outcome) => void;
  const done = new Promise<Outcome>((resolve) => (settle = resolve));
  /** Set when an attach found the process already exited: finish once its output is all delivered. */
  let exitedAt: { ends: Record<string, number>; outcome: Outcome } | undefined;
  const early: { stream: string; offset: number; data: string; processId: string }[] = [];
  /** False from a drop until the re-attach: input typed meanwhile waits in the queue, in order. */
  let online = true;

  const finish = (outcome: Outcome) => {
    if (finished) return;
    finished = true;
    const undelivered = input.stop();
    // A give-up says it itself; otherwise input still queued when the process ends or we detach is named here.
    if (undelivered > 0 && outcome.kind !== "inputRefused") options.onNotice?.(`${undelivered} bytes of input were not delivered`);
    settle(outcome);
    void conn.close();
  };

  const input = new InputPump(
    {
      current: () => (finished || !online || conn.isClosed || processId === undefined ? undefined : { conn, processId, label: current.name ?? processId }),
      onNotice: (text) => options.onNotice?.(text),
      // Finished at once (later input is not taken); closing the connection detaches it, and the process keeps running.
      onGiveUp: (reason, undelivered) =>
        finish({
          kind: "inputRefused",
          reason: `${reason}; ${undelivered} bytes of input were not delivered (${input.delivered} were). It keeps running on ${conn.host}: \`berth remote ${conn.host} attach ${current.name ?? current.processId}\` re-attaches.`,
        }),
    },
    options.inputLimits,
  );

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
    online = true;
    input.kick(); // the input typed while the connection was down goes before any new
    options.onAttached?.(process);
    const ends = Object.fromEntries(Object.entries(process.streams).map(([stream, range]) => [stream, range.end]));
    if (process.state !== "exited") return;
    exitedAt = { ends, outcome: { kind: "exited", exitCode: process.exitCode ?? null, signal: process.signal ?? null } };
    if (tracker.reached(ends)) finish(exitedAt.outcome);
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
      // Detached (or gave up) while it connected: nobody follows any more, so it must not stay open and attached.
      if (finished) return void next.close();
      conn = next;
      wire(next);
      try {
        const process = await next.call<{ process: RemoteProcess }>("process/attach", { processId, since: tracker.since() }).then((r) => r.process);
        if (finished) return; // finish() closed `next`, the current connection by then
        attached(process);
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
    get finished() {
      return finished;
    },
    write(data) {
      if (finished) return undefined;
      return input.push(data);
    },
    resize(cols, rows) {
      send("process/resize", { processId, cols, rows });
    },
    signal(signal) {
      send("process/signal", { processId, signal });
    },
    async detach() {
      if (finished) return;
      // Typed input gets a moment to reach the process, unless the host refuses it (the user asked to leave). What is left is named by finish.
      if (online && !conn.isClosed && !input.refusing) await input.flushed(DETACH_INPUT_FLUSH_MS);
      if (finished) return;
      if (!conn.isClosed) await conn.call("process/detach", { processId }).catch(() => undefined);
      finish({ kind: "detached" });
      await conn.closed;
    },
    done,
  };
}
