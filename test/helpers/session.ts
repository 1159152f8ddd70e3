/**
 * Test helper for the session API: a real `berth serve` on a real socket, an
 * initialized raw WebSocket client, and a collector of `process/output`
 * notifications that checks offsets as they arrive (no gap, no duplicate).
 */
import type { Subprocess } from "bun";
import { BUN, MAIN, eventually, makeHome, type TestHome } from "./berth.ts";
import { connect, type RawWs } from "./raw-ws.ts";

const READY_TIMEOUT_MS = 15_000;
export const WAIT_MS = 15_000;
/** One probe of acceptsWebSocket; its callers poll it within their own deadline. */
const ACCEPT_PROBE_MS = 500;

export type ServeProcess = {
  home: TestHome;
  socket: string;
  proc: Subprocess<"ignore", "ignore", "pipe">;
  /** All of stderr once the server exits. */
  stderr: Promise<string>;
  /** stderr so far. */
  log(): string;
};

export async function startServeProcess(options: { settings?: object; home?: TestHome } = {}): Promise<ServeProcess> {
  const home = options.home ?? makeHome({ install: false, prefix: "berth-session-", settings: options.settings });
  const socket = home.path("daemon", "app-server.sock");
  const proc = Bun.spawn([BUN, MAIN, "serve", "--listen", `unix://${socket}`], { env: home.env, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  let log = "";
  const stderr = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) log += decoder.decode(chunk, { stream: true });
    return log;
  })();
  const ready = await eventually(async () => proc.exitCode !== null || (await acceptsWebSocket(socket)), READY_TIMEOUT_MS);
  if (!ready || proc.exitCode !== null) throw new Error(`berth serve did not come up: ${await stderr}`);
  return { home, socket, proc, stderr, log: () => log };
}

/**
 * Whether a server accepts a WebSocket on `socket` now. The socket file appears at bind() and connections are
 * refused (ECONNREFUSED) until listen(): a test that waits for the file alone and then connects loses that race
 * on a loaded machine (seen in idle-trim.test.ts).
 */
export async function acceptsWebSocket(socket: string): Promise<boolean> {
  try {
    const ws = await connect(socket, { timeoutMs: ACCEPT_PROBE_MS });
    ws.destroy();
    return true;
  } catch {
    return false;
  }
}

export async function apiClient(socket: string): Promise<RawWs> {
  const ws = await connect(socket, { timeoutMs: WAIT_MS });
  const reply = await ws.request({ method: "initialize", params: { clientInfo: { name: "session-test", version: "1.0.0" } } });
  if (reply.error) throw new Error(`initialize failed: ${JSON.stringify(reply.error)}`);
  ws.send(JSON.stringify({ jsonrpc: "2.0", method: "initialized" }));
  return ws;
}

/**
 * Servers and connections for a test file (`afterEach` is bun:test's): `server`
 * starts `berth serve` in a fresh home, `client` opens an initialized client,
 * `track` adopts a connection opened another way. After each test every
 * connection is destroyed, then every server SIGKILLed and its home cleaned up.
 */
export function servesPerTest(afterEach: (fn: () => Promise<void>) => void) {
  const servers: ServeProcess[] = [];
  const connections: Array<{ destroy(): void }> = [];
  afterEach(async () => {
    for (const connection of connections.splice(0)) connection.destroy();
    for (const server of servers.splice(0)) {
      server.proc.kill("SIGKILL");
      await server.home.cleanup();
    }
  });
  const track = <T extends { destroy(): void }>(connection: T): T => {
    connections.push(connection);
    return connection;
  };
  return {
    async server(settings?: object): Promise<ServeProcess> {
      const s = await startServeProcess({ settings });
      servers.push(s);
      return s;
    },
    async client(s: ServeProcess): Promise<RawWs> {
      return track(await apiClient(s.socket));
    },
    track,
  };
}

/** Calls a method and returns its result, throwing on an error reply. */
export async function call(ws: RawWs, method: string, params: object = {}, timeoutMs = WAIT_MS): Promise<any> {
  const reply = await ws.request({ method, params }, timeoutMs);
  if (reply.error) throw Object.assign(new Error(`${method}: ${reply.error.message}`), { rpc: reply.error });
  return reply.result;
}

type StreamLog = { chunks: Buffer[]; length: number; next: number | undefined; truncated: boolean; firstOffset: number | undefined; readonly data: Buffer };

function newLog(): StreamLog {
  return {
    chunks: [],
    length: 0,
    next: undefined,
    truncated: false,
    firstOffset: undefined,
    get data() {
      if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
      return this.chunks[0] ?? Buffer.alloc(0);
    },
  };
}

/** Consumes process/output and process/exited notifications from a client, checking that offsets never skip or repeat. */
export class OutputCollector {
  readonly streams = new Map<string, StreamLog>();
  readonly exited = new Map<string, { exitCode: number | null; signal: string | null }>();
  readonly problems: string[] = [];

  constructor(readonly ws: RawWs) {}

  private key(processId: string, stream: string) {
    return `${processId}/${stream}`;
  }

  drain(): void {
    const pending = this.ws.pending as string[];
    for (let i = 0; i < pending.length; ) {
      let message: any;
      try {
        message = JSON.parse(pending[i] as string);
      } catch {
        i++;
        continue;
      }
      if (message.method === "process/output") {
        const { processId, stream, offset, data, truncated } = message.params;
        const log = this.streams.get(this.key(processId, stream)) ?? newLog();
        if (log.next !== undefined && offset !== log.next) this.problems.push(`${processId}/${stream}: expected offset ${log.next}, got ${offset}`);
        const bytes = Buffer.from(data, "base64");
        log.chunks.push(bytes);
        log.length += bytes.length;
        log.next = offset + bytes.length;
        log.firstOffset ??= offset;
        if (truncated) log.truncated = true;
        this.streams.set(this.key(processId, stream), log);
        pending.splice(i, 1);
      } else if (message.method === "process/exited") {
        this.exited.set(message.params.processId, { exitCode: message.params.exitCode, signal: message.params.signal });
        pending.splice(i, 1);
      } else i++;
    }
  }

  log(processId: string, stream: string): StreamLog {
    this.drain();
    return this.streams.get(this.key(processId, stream)) ?? newLog();
  }

  text(processId: string, stream: string): string {
    return this.log(processId, stream).data.toString("utf8");
  }

  async waitText(processId: string, stream: string, predicate: (text: string) => boolean, timeoutMs = WAIT_MS): Promise<string> {
    const ok = await eventually(() => predicate(this.text(processId, stream)), timeoutMs);
    const text = this.text(processId, stream);
    if (!ok) throw new Error(`timed out waiting for ${processId}/${stream}; got so far: ${JSON.stringify(text.slice(-500))}`);
    return text;
  }

  async waitExited(processId: string, timeoutMs = WAIT_MS) {
    const ok = await eventually(() => {
      this.drain();
      return this.exited.has(processId);
    }, timeoutMs);
    if (!ok) throw new Error(`timed out waiting for process/exited of ${processId}`);
    return this.exited.get(processId);
  }
}
