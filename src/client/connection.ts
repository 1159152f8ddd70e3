/**
 * A JSON-RPC connection to a host's app-server over `ssh HOST berth connect`.
 *
 * ```ts
 * import { connect } from "berth/src/client/connection.ts";
 * const conn = await connect("myhost");                     // ssh, skip shell noise, `connected`, initialize
 * const { processes } = await conn.call("process/list", {});
 * const off = conn.on("process/output", (params) => …);     // notifications by method
 * conn.onListenerError((error, method) => …);               // a listener that threw (the connection goes on)
 * conn.closed.then(({ code, stderr }) => …);                 // ssh ended (75: the server closed; reconnect)
 * await conn.close();                                        // stdin EOF: `connect` exits 0
 * ```
 *
 * One line of JSON per message in each direction (the `connect` bridge of
 * the spec). Lines before `{"status":"connected",…}` are whatever the host's
 * shell printed and are skipped; an error object there is the remote berth's
 * failure. Every wait has a deadline; every buffer has a bound. A listener
 * that throws is the caller's bug: it is reported (listeners.ts) and never
 * ends the connection.
 */
import { BerthError, type ErrorCode } from "../errors.ts";
import { dataRequestText, parseRpcText } from "../rpc-data.ts";
import { CLI_VERSION } from "../version.ts";
import { classifyPreamble, LineSplitter, type Connected } from "./lines.ts";
import { Listeners, type ListenerErrorHandler } from "./listeners.ts";
import { ConnectionClosed, KNOWN_CODES, preambleFailure, RpcError, type Closed } from "./rpc-errors.ts";
import { remoteBerthCommand, sshCommandWords } from "./ssh.ts";

export { ConnectionClosed, preambleFailure, RpcError, type Closed };

/** From spawning ssh to the `connected` line (authentication and an app-server start included). */
export const CONNECT_TIMEOUT_MS = 60_000;
/** A call without an answer in this long fails (the connection is then suspect). */
export const CALL_TIMEOUT_MS = 30_000;
/** After stdin EOF, ssh gets this long to exit before it is killed. */
const CLOSE_GRACE_MS = 5_000;
/**
 * Once ssh has exited, the end of its stderr is waited for this long, no more: a process ssh started shares
 * that stderr (a ProxyCommand does) and may hold it open as long as it lives, which would hide the lost
 * connection for ever. ssh's own last words are already there when it exits.
 */
const STDERR_DRAIN_MS = 2_000;
/** Shell noise kept for an error message, at most. */
const NOISE_MAX_BYTES = 64 * 1024;
/**
 * ssh options of a connection: a silent network (a sleeping laptop, a
 * changed Wi-Fi) is noticed within 15 s, and a connect attempt that hangs
 * gives up after 10 s, so reconnect tries stay at most ~10 s apart.
 */
const CONNECTION_SSH_OPTIONS = ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "ConnectTimeout=10"];
/** `berth connect` exit status meaning "the server closed the connection: reconnect". */
export const EXIT_RECONNECT = 75;

export type { Connected };

export type ConnectOptions = {
  env?: NodeJS.ProcessEnv;
  /** `connect --no-start`: fail with NOT_RUNNING instead of starting the app-server. */
  noStart?: boolean;
  clientName?: string;
  timeoutMs?: number;
  /** Aborting kills the ssh at once (a client that stops while a connect is under way leaves none behind). */
  signal?: AbortSignal;
};


type Pending = { resolve(value: unknown): void; reject(error: Error): void; timer: ReturnType<typeof setTimeout> };

export class Connection {
  /** What the far side's `connect` said when it was ready. */
  info!: Connected;
  /** The initialize result of the app-server. */
  server!: Record<string, unknown>;
  /** Resolves once, when ssh has exited. */
  readonly closed: Promise<Closed>;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners: Listeners;
  private stderrTail = "";
  private ended: Closed | undefined;

  constructor(
    readonly host: string,
    private readonly child: ReturnType<typeof Bun.spawn<"pipe", "pipe", "pipe">>,
  ) {
    this.listeners = new Listeners(host);
    this.closed = child.exited.then(async (code) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const drained = await Promise.race([
        this.stderrDone.then(() => true),
        new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), STDERR_DRAIN_MS))),
      ]);
      clearTimeout(timer);
      if (!drained) this.stopReadingStderr();
      const ended: Closed = { code: child.signalCode ? null : code, signal: child.signalCode ? String(child.signalCode) : null, stderr: this.stderrTail };
      this.ended = ended;
      for (const pending of this.pending.values()) {
        clearTimeout(pending.timer);
        pending.reject(new ConnectionClosed(ended));
      }
      this.pending.clear();
      return ended;
    });
  }

  private stderrDone: Promise<void> = Promise.resolve();
  /** Stops reading ssh's stderr (once ssh is gone, whoever still holds it open is not waited for). */
  private stopReadingStderr: () => void = () => {};
  private readonly held: Promise<unknown>[] = [];

  /** Stops reading from the host until `until` settles (backpressure from whoever consumes notifications). */
  holdReading(until: Promise<unknown>): void {
    this.held.push(until.catch(() => undefined));
  }

  /** The ssh process (tests kill it to simulate a dropped network). */
  get sshPid(): number {
    return this.child.pid;
  }

  get isClosed(): boolean {
    return this.ended !== undefined;
  }

  /** @internal wires the streams; `connect()` calls it. */
  start(onPreamble: (line: string) => boolean): void {
    const stderr = this.child.stderr.getReader();
    this.stopReadingStderr = () => void stderr.cancel().catch(() => {});
    this.stderrDone = (async () => {
      const decoder = new TextDecoder();
      for (let read = await stderr.read(); !read.done; read = await stderr.read()) {
        this.stderrTail = (this.stderrTail + decoder.decode(read.value, { stream: true })).slice(-NOISE_MAX_BYTES);
      }
    })().catch(() => {});
    void (async () => {
      const splitter = new LineSplitter();
      let ready = false;
      try {
        for await (const chunk of this.child.stdout) {
          for (const line of splitter.push(chunk)) {
            if (!ready) ready = onPreamble(line);
            // An answered call's caller acts on it (forward: learns its tunnelId) before the notifications read behind it.
            else if (this.receive(line)) await new Promise<void>((resolve) => setImmediate(resolve));
          }
          // A slow consumer (a terminal) holds reading: ssh, `connect` and the server's ring absorb the rest.
          while (this.held.length > 0) await this.held.shift();
        }
      } catch {
        // A broken stream (a line past its bound): the connection cannot go on. Listeners cannot get here (listeners.ts).
        this.child.kill("SIGKILL");
      }
    })();
  }

  /** Handles one line; true when it settled a call. */
  private receive(line: string): boolean {
    if (!line.trim()) return false;
    let message: { id?: unknown; method?: unknown; params?: unknown; result?: unknown; error?: { code: number; message: string; data?: unknown } };
    try {
      message = parseRpcText(line) as typeof message; // a tunnel/data's base64 is not run through the JSON parser
    } catch {
      return false;
    }
    // JSON that is no message (null, 5, an array) is skipped like bad JSON: a throw here would end the connection.
    if (typeof message !== "object" || message === null || Array.isArray(message)) return false;
    if (typeof message.method === "string") {
      this.listeners.emit(message.method, message.params); // never throws: a listener's error is reported, the connection goes on
      return false;
    }
    const pending = typeof message.id === "number" ? this.pending.get(message.id) : undefined;
    if (!pending) return false;
    this.pending.delete(message.id as number);
    clearTimeout(pending.timer);
    const error = message.error;
    if (error !== undefined) pending.reject(typeof error === "object" && error !== null ? new RpcError(error.code, error.message, error.data) : new RpcError(-32603, `a malformed error: ${JSON.stringify(error)}`));
    else pending.resolve(message.result);
    return true;
  }

  private send(message: object | string): void {
    if (this.ended) throw new ConnectionClosed(this.ended);
    this.child.stdin.write(`${typeof message === "string" ? message : JSON.stringify(message)}\n`);
    this.child.stdin.flush();
  }

  /** A JSON-RPC request; rejects with RpcError (the server's), ConnectionClosed or a timeout. */
  call<T = any>(method: string, params: unknown = {}, timeoutMs = CALL_TIMEOUT_MS): Promise<T> {
    return this.request(method, (id) => ({ jsonrpc: "2.0", id, method, params }), timeoutMs);
  }

  /** A call whose params carry `bytes` as base64 `data` (tunnel/write, process/write, fs/writeFile), its text built around the base64. */
  callData<T = any>(method: string, params: Record<string, unknown>, bytes: Uint8Array, timeoutMs = CALL_TIMEOUT_MS): Promise<T> {
    const base64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("base64");
    return this.request(method, (id) => dataRequestText(id, method, params, base64), timeoutMs);
  }

  private request<T>(method: string, message: (id: number) => object | string, timeoutMs: number): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method} got no answer from ${this.host} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
      try {
        this.send(message(id));
      } catch (error) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(error as Error);
      }
    });
  }

  /** A JSON-RPC notification (no answer). */
  notify(method: string, params?: unknown): void {
    this.send({ jsonrpc: "2.0", method, ...(params === undefined ? {} : { params }) });
  }

  /** Subscribes to a notification method (`"*"`: all, as {method, params}); returns the unsubscribe. */
  on(method: string, listener: (params: any) => void): () => void {
    return this.listeners.on(method, listener);
  }

  /** Receives what a listener throws or rejects with (without a handler: one line on stderr); returns the unsubscribe. */
  onListenerError(handler: ListenerErrorHandler): () => void {
    return this.listeners.onError(handler);
  }

  /** Ends stdin (the bridge exits 0), waits for ssh; kills it past the grace period. */
  async close(): Promise<Closed> {
    if (!this.ended) {
      try {
        this.child.stdin.end();
      } catch {
        // already closed
      }
      const timer = setTimeout(() => this.child.kill("SIGKILL"), CLOSE_GRACE_MS);
      await this.closed;
      clearTimeout(timer);
    }
    return this.closed;
  }

  /** Drops the connection at once (SIGKILL to our ssh). */
  kill(): void {
    this.child.kill("SIGKILL");
  }
}

/**
 * Opens a connection: spawns the system ssh running `berth connect` on the
 * host, waits for the `connected` line, then does the `initialize` handshake.
 */
export async function connect(host: string, options: ConnectOptions = {}): Promise<Connection> {
  const env = options.env ?? process.env;
  const [ssh, ...sshArgs] = sshCommandWords(env);
  const command = remoteBerthCommand(["connect", ...(options.noStart ? ["--no-start"] : [])]);
  let child: ReturnType<typeof Bun.spawn<"pipe", "pipe", "pipe">>;
  try {
    child = Bun.spawn({
      cmd: [ssh as string, ...sshArgs, "-T", ...CONNECTION_SSH_OPTIONS, "--", host, command],
      env: env as Record<string, string>,
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    }) as ReturnType<typeof Bun.spawn<"pipe", "pipe", "pipe">>;
  } catch (error) {
    throw new BerthError("SSH_FAILED", `cannot run ${ssh}: ${(error as Error).message}. Install OpenSSH's client or set BERTH_SSH.`);
  }
  const conn = new Connection(host, child);
  const abort = () => conn.kill();
  if (options.signal?.aborted) abort();
  options.signal?.addEventListener("abort", abort, { once: true });
  void conn.closed.then(() => options.signal?.removeEventListener("abort", abort));
  let noise = "";
  const preamble = new Promise<Connected>((resolve, reject) => {
    conn.start((line) => {
      const seen = classifyPreamble(line);
      if (seen.kind === "connected") resolve(seen.value);
      else if (seen.kind === "error") {
        reject(new BerthError((KNOWN_CODES.has(seen.code) ? seen.code : "SSH_FAILED") as ErrorCode, `berth connect on ${host}: ${seen.message}`));
      } else noise = (noise + line + "\n").slice(-NOISE_MAX_BYTES);
      return seen.kind === "connected";
    });
    void conn.closed.then((closed) => reject(preambleFailure(host, closed, noise)));
  });
  const timeoutMs = options.timeoutMs ?? CONNECT_TIMEOUT_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    conn.info = await Promise.race([
      preamble,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new BerthError("SSH_FAILED", `no \`connected\` line from ${host} within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    conn.server = await conn.call("initialize", { clientInfo: { name: options.clientName ?? "berth-remote", version: CLI_VERSION } });
    conn.notify("initialized");
    return conn;
  } catch (error) {
    conn.kill();
    await conn.closed;
    if (error instanceof ConnectionClosed) throw preambleFailure(host, error.closedWith, noise);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
