/**
 * Test helper: a small JSON-RPC client for the app-server API on top of the
 * from-scratch WebSocket client (raw-ws.ts), plus `berth serve` as a real
 * process in a temporary BERTH_HOME. Replies are matched by id; notifications
 * are queued for `waitNotification` or handed to a per-method handler
 * (streams like tunnel/data). Every wait has a deadline.
 */
import type { Subprocess } from "bun";
import { BUN, MAIN, eventually, makeHome, type TestHome } from "./berth.ts";
import { connect, type RawWs } from "./raw-ws.ts";

const CALL_TIMEOUT_MS = 20_000;
const CONNECT_TIMEOUT_MS = 15_000;
const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
const CLIENT_INFO = { name: "rpc-client-test", version: "1.0.0" };

export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: any,
  ) {
    super(`${message} (code ${code})`);
    this.name = "RpcError";
  }
}

export type Notification = { method: string; params: any };

export class RpcClient {
  private nextId = 1;
  private readonly calls = new Map<number, { resolve: (reply: any) => void; reject: (error: Error) => void }>();
  private readonly handlers = new Map<string, (params: any) => void>();
  /** When set, every message's kind in arrival order ("reply <id>" or the notification's method), for ordering checks. */
  order: string[] | undefined;
  /** Notifications without a handler, oldest first. */
  readonly notifications: Notification[] = [];

  private constructor(readonly ws: RawWs) {
    const readFrames = ws.conn.onData;
    ws.conn.onData = () => {
      readFrames?.();
      this.pump();
    };
    void ws.closed.then(() => {
      for (const call of this.calls.values()) call.reject(new Error("connection closed before the reply"));
      this.calls.clear();
    });
  }

  /** Connects to a Unix socket and completes initialize + initialized. */
  static async open(socketPath: string, clientInfo: object = CLIENT_INFO): Promise<RpcClient> {
    const client = new RpcClient(await connect(socketPath, { timeoutMs: CONNECT_TIMEOUT_MS }));
    await client.call("initialize", { clientInfo });
    client.ws.send(JSON.stringify({ jsonrpc: "2.0", method: "initialized" }));
    return client;
  }

  private pump(): void {
    const pending = this.ws.pending as string[];
    while (pending.length > 0) {
      const message = JSON.parse(pending.shift() as string);
      this.order?.push(typeof message.method === "string" ? message.method : `reply ${message.id}`);
      if (typeof message.method === "string") {
        const handler = this.handlers.get(message.method);
        if (handler) handler(message.params);
        else this.notifications.push({ method: message.method, params: message.params });
      } else {
        const call = this.calls.get(message.id);
        this.calls.delete(message.id);
        call?.resolve(message);
      }
    }
  }

  /** The whole reply ({result} or {error}). */
  request(method: string, params?: unknown, timeoutMs = CALL_TIMEOUT_MS): Promise<any> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.calls.delete(id);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for the reply to ${method}`));
      }, timeoutMs);
      this.calls.set(id, {
        resolve: (reply) => {
          clearTimeout(timer);
          resolve(reply);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) }));
    });
  }

  /** The result; an error reply rejects with RpcError. */
  async call(method: string, params?: unknown, timeoutMs = CALL_TIMEOUT_MS): Promise<any> {
    const reply = await this.request(method, params, timeoutMs);
    if (reply.error) throw new RpcError(reply.error.code, reply.error.message, reply.error.data);
    return reply.result;
  }

  /** The error of a call that must fail; throws if it succeeds. */
  async callError(method: string, params?: unknown, timeoutMs = CALL_TIMEOUT_MS): Promise<{ code: number; message: string; data?: any }> {
    const reply = await this.request(method, params, timeoutMs);
    if (!reply.error) throw new Error(`${method} was expected to fail but returned ${JSON.stringify(reply.result).slice(0, 200)}`);
    return reply.error;
  }

  /** Sends every notification of `method` to `handler` instead of the queue. */
  on(method: string, handler: (params: any) => void): void {
    this.handlers.set(method, handler);
  }

  /** Removes and returns the first queued notification of `method` passing `match`, waiting up to the deadline. */
  waitNotification(method: string, match: (params: any) => boolean = () => true, timeoutMs = CALL_TIMEOUT_MS): Promise<any> {
    return this.ws.conn.waitFor(
      () => {
        const index = this.notifications.findIndex((n) => n.method === method && match(n.params));
        return index < 0 ? undefined : this.notifications.splice(index, 1)[0]?.params;
      },
      timeoutMs,
      `a ${method} notification`,
    );
  }

  /** Stops reading the socket (the kernel buffers fill, then the server sees backpressure). */
  pauseReading(): void {
    (this.ws.conn as unknown as { socket: { pause(): void } }).socket.pause();
  }

  resumeReading(): void {
    (this.ws.conn as unknown as { socket: { resume(): void } }).socket.resume();
  }

  close(): Promise<unknown> {
    return this.ws.close();
  }

  destroy(): void {
    this.ws.destroy();
  }
}

export type AppServer = { socket: string; pid: number; proc: Subprocess<"ignore", "pipe", "pipe">; stop(): Promise<void> };

/** Starts `berth serve` on `socket` in `home` as a real process and waits until it answers initialize. */
export async function startAppServer(home: TestHome, socket = home.path("daemon", "app-server.sock")): Promise<AppServer> {
  const proc = Bun.spawn([BUN, MAIN, "serve", "--listen", `unix://${socket}`], { env: home.env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const stderr = new Response(proc.stderr).text();
  const ready = await eventually(async () => {
    if (proc.exitCode !== null) return true;
    try {
      const client = await RpcClient.open(socket);
      client.destroy();
      return true;
    } catch {
      return false;
    }
  }, READY_TIMEOUT_MS);
  if (!ready || proc.exitCode !== null) {
    proc.kill("SIGKILL");
    throw new Error(`berth serve did not become ready: exit ${proc.exitCode}; stderr: ${(await Promise.race([stderr, Bun.sleep(1_000)])) ?? ""}`);
  }
  return {
    socket,
    pid: proc.pid,
    proc,
    async stop() {
      if (proc.exitCode !== null) return;
      proc.kill("SIGTERM");
      const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(STOP_TIMEOUT_MS).then(() => false)]);
      if (!exited) proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

/** A test file's shared app-server: a fresh BERTH_HOME with no release installed, `berth serve` in it, and one initialized client. */
export type ServedHome = { home: TestHome; server: AppServer; client: RpcClient };

/** Starts a ServedHome (for a file's beforeAll); on failure it ends what it had started before throwing. */
export async function openServedHome(prefix: string): Promise<ServedHome> {
  const home = makeHome({ install: false, prefix });
  let server: AppServer | undefined;
  try {
    server = await startAppServer(home);
    return { home, server, client: await RpcClient.open(server.socket) };
  } catch (error) {
    await closeServedHome({ home, server });
    throw error;
  }
}

/** Ends a ServedHome (for a file's afterAll): the client, then the server, then every process left in the home. Parts never started are skipped. */
export async function closeServedHome({ home, server, client }: Partial<ServedHome>): Promise<void> {
  client?.destroy();
  await server?.stop();
  await home?.cleanup();
}
