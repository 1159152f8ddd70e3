/**
 * Test helper: `berth connect` as a real subprocess with pipes, read the way a
 * client over SSH reads it — skip everything before the `connected` line, then
 * one JSON-RPC message per line.
 */
import { afterEach } from "bun:test";
import type { Subprocess } from "bun";
import { BUN, MAIN, eventually, makeHome, type TestHome } from "./berth.ts";
import { readLines } from "./lines.ts";

export const CONNECT_WAIT_MS = 20_000;

export class ConnectClient {
  readonly lines: string[] = [];
  /** Lines before the `connected` line (shell noise). */
  readonly noise: string[] = [];
  connected: any;
  private nextId = 1;
  readonly exited: Promise<number>;

  constructor(readonly proc: Subprocess<"pipe", "pipe", "pipe">) {
    this.exited = proc.exited;
    void this.read();
  }

  private async read() {
    await readLines(this.proc.stdout, (line) => {
      if (this.connected !== undefined) {
        this.lines.push(line);
        return;
      }
      let parsed: any;
      try {
        parsed = JSON.parse(line);
      } catch {
        // noise
      }
      if (parsed?.status === "connected") this.connected = parsed;
      else this.noise.push(line);
    });
  }

  async waitConnected(timeoutMs = CONNECT_WAIT_MS) {
    if (!(await eventually(() => this.connected !== undefined || this.proc.exitCode !== null, timeoutMs))) throw new Error("no connected line");
    if (!this.connected) throw new Error(`connect exited ${this.proc.exitCode} before the connected line; noise: ${this.noise.join("\n")}`);
    return this.connected;
  }

  send(message: object | string) {
    this.proc.stdin.write(typeof message === "string" ? message : `${JSON.stringify({ jsonrpc: "2.0", ...message })}\n`);
    void this.proc.stdin.flush();
  }

  async call(method: string, params: object = {}, timeoutMs = CONNECT_WAIT_MS): Promise<any> {
    const id = this.nextId++;
    this.send({ id, method, params });
    let reply: any;
    const ok = await eventually(() => {
      reply = this.messages().find((m) => m.id === id);
      return reply !== undefined;
    }, timeoutMs);
    if (!ok) throw new Error(`no reply to ${method}`);
    if (reply.error) throw Object.assign(new Error(`${method}: ${reply.error.message}`), { rpc: reply.error });
    return reply.result;
  }

  async initialize() {
    const result = await this.call("initialize", { clientInfo: { name: "connect-test", version: "1.0.0" } });
    this.send({ method: "initialized" });
    return result;
  }

  messages(): any[] {
    return this.lines.map((line) => JSON.parse(line));
  }

  /** The bytes of process/output for one stream, checked for contiguous offsets from the first one seen. */
  output(processId: string, stream: string): { text: string; firstOffset?: number; gaps: number } {
    let text = "";
    let next: number | undefined;
    let firstOffset: number | undefined;
    let gaps = 0;
    for (const m of this.messages()) {
      if (m.method !== "process/output" || m.params.processId !== processId || m.params.stream !== stream) continue;
      if (next !== undefined && m.params.offset !== next) gaps++;
      const data = Buffer.from(m.params.data, "base64");
      firstOffset ??= m.params.offset;
      next = m.params.offset + data.length;
      text += data.toString("utf8");
    }
    return { text, firstOffset, gaps };
  }

  kill() {
    try {
      this.proc.kill("SIGKILL");
    } catch {
      // gone
    }
  }
}

export function spawnConnect(cmd: string[], env: Record<string, string>): ConnectClient {
  return new ConnectClient(Bun.spawn(cmd, { env, stdin: "pipe", stdout: "pipe", stderr: "pipe" }));
}

/**
 * Per-test BERTH_HOMEs and `connect` bridges, cleaned after each test: bridges
 * killed by pid, the app-server stopped, then every process of the home killed.
 */
export function connectFixtures(prefix: string) {
  const homes: TestHome[] = [];
  const bridges: ConnectClient[] = [];
  afterEach(async () => {
    for (const bridge of bridges.splice(0)) bridge.kill();
    for (const home of homes.splice(0)) {
      await home.run(["stop"]);
      await home.cleanup();
    }
  });
  return {
    home(settings: object = { stopGraceMs: 3_000 }): TestHome {
      const home = makeHome({ prefix, settings });
      homes.push(home);
      return home;
    },
    /** `berth connect ARGS` from source; with `wrapper`, a shell runs that first (noise) and then execs connect. */
    connect(home: TestHome, args: string[] = [], wrapper?: string): ConnectClient {
      const cmd = wrapper ? ["sh", "-c", `${wrapper}; exec "$@"`, "sh", BUN, MAIN, "connect", ...args] : [BUN, MAIN, "connect", ...args];
      const bridge = spawnConnect(cmd, home.env);
      bridges.push(bridge);
      return bridge;
    },
  };
}
