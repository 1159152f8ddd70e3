// The app-server (`berth serve`) as a real process on a real Unix socket,
// driven by a from-scratch WebSocket client so the wire protocol itself is
// under test: handshake, JSON-RPC errors, oversized frames, bad clients,
// SIGTERM, leftover sockets, a second server, many clients.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { BUN, MAIN, eventually, isAlive, parseLastJsonLine, homesPerTest, type TestHome } from "./helpers/berth.ts";
import { connect, encodeFrame, OP_BINARY, OP_TEXT, rawConnect, type RawWs } from "./helpers/raw-ws.ts";

// Generous: a server started from source, or a close, can take seconds on a loaded machine (CI runs every suite on
// 2 cores). Each is a wait for something that must happen; none bounds how fast.
const TEST_TIMEOUT_MS = 60_000;
const READY_TIMEOUT_MS = 20_000;
const EXIT_TIMEOUT_MS = 15_000;
/** For a client's connection, a reply or a close. */
const WAIT_MS = 15_000;
const MIB = 1024 * 1024;
const CLIENT_INFO = { name: "server-test", version: "1.0.0" };

type Server = {
  home: TestHome;
  socket: string;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  stdout: Promise<string>;
  stderr: Promise<string>;
};

const clients: RawWs[] = [];

afterEach(() => {
  for (const client of clients.splice(0)) client.destroy();
});
const homeOf = homesPerTest(afterEach);
const newHome = () => homeOf({ install: false, prefix: "berth-server-" });

function spawnServe(home: TestHome, socket: string): Server {
  const proc = Bun.spawn([BUN, MAIN, "serve", "--listen", `unix://${socket}`], {
    env: home.env,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  return { home, socket, proc, stdout: new Response(proc.stdout).text(), stderr: new Response(proc.stderr).text() };
}

async function tryConnect(socket: string, timeoutMs = 1_000): Promise<RawWs | undefined> {
  try {
    const ws = await connect(socket, { timeoutMs });
    clients.push(ws);
    return ws;
  } catch {
    return undefined;
  }
}

async function client(socket: string): Promise<RawWs> {
  const ws = await connect(socket, { timeoutMs: WAIT_MS });
  clients.push(ws);
  return ws;
}

async function initialize(ws: RawWs, clientInfo: object = CLIENT_INFO) {
  const reply = await ws.request({ method: "initialize", params: { clientInfo } });
  expect(reply.error).toBeUndefined();
  return reply.result;
}

/** Starts `berth serve` and waits until it answers `initialize`; fails fast if it exits. */
async function startServe(home = newHome(), socket = home.path("daemon", "app-server.sock")): Promise<Server> {
  const server = spawnServe(home, socket);
  const ready = await eventually(async () => {
    if (server.proc.exitCode !== null) return true;
    const ws = await tryConnect(socket, 500);
    if (!ws) return false;
    try {
      await initialize(ws);
      return true;
    } catch {
      return false;
    } finally {
      ws.destroy();
    }
  }, READY_TIMEOUT_MS);
  if (!ready || server.proc.exitCode !== null) {
    server.proc.kill("SIGKILL");
    throw new Error(`serve did not become ready (exit ${server.proc.exitCode}): ${await server.stdout} ${await server.stderr}`);
  }
  return server;
}

async function exitCode(proc: Subprocess, timeoutMs = EXIT_TIMEOUT_MS): Promise<number | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), timeoutMs)));
  const code = await Promise.race([proc.exited, timeout]);
  clearTimeout(timer);
  return code;
}

/** The server still answers a fresh client, as the same instance. */
async function expectStillServing(server: Server, instanceId?: string) {
  expect(isAlive(server.proc.pid)).toBe(true);
  const ws = await client(server.socket);
  const result = await initialize(ws);
  expect(result.pid).toBe(server.proc.pid);
  if (instanceId) expect(result.instanceId).toBe(instanceId);
  await ws.close();
}

describe("berth serve", () => {
  test(
    "initialize states who the server is; initialized gets no reply",
    async () => {
      const server = await startServe();
      const ws = await client(server.socket);
      // A title long enough for a 16-bit frame length.
      const result = await initialize(ws, { ...CLIENT_INFO, title: "t".repeat(2_000) });
      expect(result.userAgent).toMatch(/^berth\/\S+ \(\S+ \S+; (x64|arm64)\)$/);
      expect(result.serverInfo).toEqual({ name: "berth", version: expect.any(String) });
      expect(result.userAgent.startsWith(`berth/${result.serverInfo.version} `)).toBe(true);
      expect(result.pid).toBe(server.proc.pid);
      expect(result.instanceId).toMatch(/^[0-9a-f-]{36}$/);
      expect(result.berthHome).toBe(server.home.home);
      expect(new Date(result.startedAt).toISOString()).toBe(result.startedAt);
      expect(Date.now() - Date.parse(result.startedAt)).toBeLessThan(60_000);
      expect(result.remoteControl).toEqual({ enabled: false });

      // The notification gets no reply: the next message is the reply to the request sent after it.
      ws.send(JSON.stringify({ jsonrpc: "2.0", method: "initialized" }));
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: "after", method: "no/such/method" }));
      const next = await ws.nextMessage();
      expect(next.id).toBe("after");
      expect(next.error.code).toBe(-32601);
      expect(ws.pending).toHaveLength(0);

      // A clean close handshake is echoed.
      expect(await ws.close()).toEqual({ code: 1000, reason: undefined });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "JSON-RPC errors: not initialized, bad params, unknown method, bad JSON, invalid requests",
    async () => {
      const server = await startServe();
      const ws = await client(server.socket);
      const expectError = async (text: string | Uint8Array, code: number, id: unknown, binary = false) => {
        if (binary) ws.sendFrame(OP_BINARY, text);
        else ws.send(text as string);
        const reply = await ws.nextMessage();
        expect({ text: String(text), jsonrpc: reply.jsonrpc, id: reply.id, code: reply.error?.code, result: reply.result }).toEqual({
          text: String(text),
          jsonrpc: "2.0",
          id,
          code,
          result: undefined,
        });
        expect(typeof reply.error.message).toBe("string");
      };

      await expectError('{"jsonrpc":"2.0","id":1,"method":"status"}', -32002, 1);
      await expectError('{"jsonrpc":"2.0","id":2,"method":"initialize"}', -32602, 2);
      await expectError('{"jsonrpc":"2.0","id":3,"method":"initialize","params":{}}', -32602, 3);
      await expectError('{"jsonrpc":"2.0","id":4,"method":"initialize","params":{"clientInfo":{"name":"x"}}}', -32602, 4);
      // A failed initialize does not initialize.
      await expectError('{"jsonrpc":"2.0","id":5,"method":"status"}', -32002, 5);
      // Bad JSON and invalid shapes are answered before initialize too.
      await expectError("{not json", -32700, null);
      await expectError("[]", -32600, null);

      await initialize(ws);
      await expectError('{"jsonrpc":"2.0","id":"u","method":"no/such/method"}', -32601, "u");
      await expectError("{not json", -32700, null);
      await expectError("", -32700, null);
      await expectError('{"jsonrpc":"2.0","id":1,"method":"x"', -32700, null);
      await expectError("42", -32600, null);
      await expectError('"initialize"', -32600, null);
      await expectError("null", -32600, null);
      await expectError("[]", -32600, null);
      await expectError('[{"jsonrpc":"2.0","id":1,"method":"initialize"}]', -32600, null);
      await expectError('{"jsonrpc":"1.0","id":6,"method":"x"}', -32600, 6);
      await expectError('{"id":7,"method":"x"}', -32600, 7);
      await expectError('{"jsonrpc":"2.0","id":8}', -32600, 8);
      await expectError('{"jsonrpc":"2.0","id":9,"method":42}', -32600, 9);
      await expectError('{"jsonrpc":"2.0","id":{},"method":"x"}', -32600, null);
      await expectError('{"jsonrpc":"2.0","id":true,"method":"x"}', -32600, null);
      await expectError('{"jsonrpc":"2.0","id":1,"method":"x"}', -32700, null, true); // binary frames are not JSON-RPC

      // After all of that the connection still works.
      const again = await ws.request({ method: "initialize", params: { clientInfo: CLIENT_INFO } });
      expect(again.result.pid).toBe(server.proc.pid);
      expect(ws.pending).toHaveLength(0);
      expect(ws.conn.isClosed).toBe(false);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a frame over 1 MiB closes only that connection; exactly 1 MiB is accepted",
    async () => {
      const server = await startServe();
      const bystander = await client(server.socket);
      const { instanceId } = await initialize(bystander);

      // Exactly 1 MiB (64-bit frame length) is within the limit.
      const big = await client(server.socket);
      const base = JSON.stringify({ jsonrpc: "2.0", id: "big", method: "initialize", params: { clientInfo: CLIENT_INFO, pad: "" } });
      const exact = base.replace('"pad":""', `"pad":"${"a".repeat(MIB - Buffer.byteLength(base))}"`);
      expect(Buffer.byteLength(exact)).toBe(MIB);
      big.send(exact);
      expect((await big.nextMessage()).result.instanceId).toBe(instanceId);

      // One byte more closes that connection (1009 = message too big).
      big.send(exact.replace('"pad":"', '"pad":"a'));
      const closed = await big.waitClosed(WAIT_MS);
      expect(closed.code === undefined || closed.code === 1009).toBe(true);

      // The other connection, opened beforehand, is untouched.
      const reply = await bystander.request({ method: "initialize", params: { clientInfo: CLIENT_INFO } });
      expect(reply.result.instanceId).toBe(instanceId);
      expect(bystander.conn.isClosed).toBe(false);
      await expectStillServing(server, instanceId);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "garbage bytes, half frames and half handshakes do not take the server down",
    async () => {
      const server = await startServe();
      const bystander = await client(server.socket);
      const { instanceId } = await initialize(bystander);

      // Not HTTP at all: the server refuses and closes that connection.
      const garbage = await rawConnect({ unix: server.socket });
      garbage.write(Buffer.from([0x00, 0xff, 0x13, 0x37, ...Buffer.from("\r\n\r\nGET nonsense\r\n\r\n"), ...Array(4096).fill(0xfe)]));
      await garbage.waitClosed(WAIT_MS);
      expect(garbage.buffered.toString("latin1")).not.toContain(" 101 ");

      // Half an upgrade request, then gone.
      const halfHandshake = await rawConnect({ unix: server.socket });
      halfHandshake.write("GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n");
      halfHandshake.destroy();

      // A frame header promising 1000 bytes, 10 bytes of it, then gone.
      const midFrame = await client(server.socket);
      await initialize(midFrame);
      const frame = encodeFrame(OP_TEXT, "x".repeat(1_000));
      midFrame.sendRaw(frame.subarray(0, 18));
      midFrame.destroy();

      // A frame header promising 1000 bytes, then a graceful FIN.
      const finMidFrame = await client(server.socket);
      finMidFrame.sendRaw(frame.subarray(0, 5));
      finMidFrame.conn.end();
      await finMidFrame.waitClosed(WAIT_MS);

      // An unmasked client frame is a protocol error: that connection is closed.
      const unmasked = await client(server.socket);
      unmasked.sendFrame(OP_TEXT, '{"jsonrpc":"2.0","id":1,"method":"initialize"}', { mask: false });
      await unmasked.waitClosed(WAIT_MS);

      // A garbage WebSocket frame (reserved opcode) closes that connection only.
      const reserved = await client(server.socket);
      reserved.sendRaw(encodeFrame(0x3, "??"));
      await reserved.waitClosed(WAIT_MS);

      expect((await bystander.request({ method: "initialize", params: { clientInfo: CLIENT_INFO } })).result.instanceId).toBe(instanceId);
      await expectStillServing(server, instanceId);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "plain HTTP without an upgrade gets a non-101 answer",
    async () => {
      const server = await startServe();
      const root = await fetch("http://localhost/", { unix: server.socket });
      expect(root.status).not.toBe(101);
      expect(root.status).toBe(426);
      await root.text();
      const other = await fetch("http://localhost/some/path", { unix: server.socket });
      expect(other.status).toBe(404);
      await other.text();
      // An upgrade on another path is refused too.
      await expect(connect(server.socket, { path: "/other", timeoutMs: WAIT_MS })).rejects.toMatchObject({ status: 404 });
      await expectStillServing(server);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "SIGTERM closes connections, removes the socket and exits 0 with a stopped line",
    async () => {
      const server = await startServe();
      const ws = await client(server.socket);
      const { instanceId } = await initialize(ws);
      expect(statSync(server.socket).isSocket()).toBe(true);
      expect(statSync(server.socket).mode & 0o777).toBe(0o600);

      server.proc.kill("SIGTERM");
      expect(await exitCode(server.proc)).toBe(0);
      expect(existsSync(server.socket)).toBe(false);
      await ws.waitClosed(WAIT_MS);

      const last = parseLastJsonLine(await server.stdout);
      expect(last).toMatchObject({ status: "stopped", pid: server.proc.pid, instanceId });
      // Exactly one JSON object on stdout; the human lines went to stderr.
      expect((await server.stdout).trim().split("\n")).toHaveLength(1);
      expect(await server.stderr).toContain("stopped");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "SIGTERM leaves a successor's socket at the path alone, and still ends its own connections",
    async () => {
      const home = newHome();
      const socket = home.path("daemon", "app-server.sock");
      const first = await startServe(home, socket);
      const firstClient = await client(socket);
      await initialize(firstClient);
      // The path changes hands: the first server's socket is moved away, a second server binds the path.
      renameSync(socket, `${socket}.first`);
      const second = await startServe(home, socket);
      first.proc.kill("SIGTERM");
      expect(await exitCode(first.proc)).toBe(0);
      await firstClient.waitClosed(WAIT_MS);
      expect(statSync(socket).isSocket()).toBe(true);
      await expectStillServing(second);
      rmSync(`${socket}.first`, { force: true });
    },
    TEST_TIMEOUT_MS,
  );

  // Our socket moved away (to `${socket}.moved`) and something else put at the path before SIGTERM: it must stay as it
  // is, and the server must still exit promptly with its report. `put` returns what the path must still hold after.
  const strangers: Array<[string, (socket: string) => (() => string) | undefined]> = [
    ["a dangling symlink", (socket) => (symlinkSync(`${socket}.nowhere`, socket), () => `link:${readlinkSync(socket)}`)],
    ["a symlink to our own moved socket", (socket) => (symlinkSync(`${socket}.moved`, socket), () => `link:${readlinkSync(socket)}`)],
    ["a symlink loop", (socket) => (symlinkSync(socket, socket), () => `link:${readlinkSync(socket)}`)],
    ["a plain file", (socket) => (writeFileSync(socket, "mine\n"), () => `file:${readFileSync(socket, "utf8")}`)],
    ["nothing: its folder removed", (socket) => (rmSync(`${socket}.moved`), rmSync(socket.replace(/\/[^/]+$/, ""), { recursive: true }), undefined)],
  ];
  for (const [what, put] of strangers) {
    test(
      `SIGTERM with ${what} at the socket path: left as it is, prompt exit, report written`,
      async () => {
        const home = newHome();
        const socket = home.path("daemon", "app-server.sock");
        const server = await startServe(home, socket);
        const ws = await client(socket);
        await initialize(ws);
        renameSync(socket, `${socket}.moved`);
        const holds = put(socket);
        const expected = holds?.();
        server.proc.kill("SIGTERM");
        expect(await exitCode(server.proc)).toBe(0);
        await ws.waitClosed(WAIT_MS);
        if (holds) {
          expect(lstatSync(socket).isSymbolicLink() || lstatSync(socket).isFile()).toBe(true);
          expect(holds()).toBe(expected!);
        } else expect(existsSync(home.path("daemon"))).toBe(false);
        expect(parseLastJsonLine(await server.stdout)).toMatchObject({ status: "stopped", pid: server.proc.pid });
        rmSync(`${socket}.moved`, { force: true });
      },
      TEST_TIMEOUT_MS,
    );
  }

  test(
    "a leftover socket file nobody listens on is removed and the server starts",
    async () => {
      const home = newHome();
      const socket = home.path("daemon", "app-server.sock");
      mkdirSync(home.path("daemon"), { mode: 0o700 });
      // A real socket whose listener died without unlinking it (SIGKILL leaves the file behind).
      // (No inode comparison afterwards: the filesystem may hand the freed inode to the new socket.)
      const orphan = Bun.spawn(
        [BUN, "-e", `Bun.listen({ unix: ${JSON.stringify(socket)}, socket: { data() {} } }); process.kill(process.pid, "SIGKILL");`],
        { env: home.env, stdout: "ignore", stderr: "pipe" },
      );
      await exitCode(orphan);
      expect(statSync(socket).isSocket()).toBe(true);
      expect(await tryConnect(socket, 1_000)).toBeUndefined();

      const server = await startServe(home, socket);
      expect(statSync(socket).isSocket()).toBe(true);
      await expectStillServing(server);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a plain file where the socket belongs is never removed: serve fails with START_FAILED naming it",
    async () => {
      const home = newHome();
      const socket = home.path("stale.sock");
      writeFileSync(socket, "not a socket\n");
      const server = spawnServe(home, socket);
      const code = await exitCode(server.proc);
      expect(code).not.toBe("timeout");
      expect(code).not.toBe(0);
      const json = parseLastJsonLine(await server.stdout);
      expect(json?.error?.code).toBe("START_FAILED");
      expect(json.error.message).toContain(`${socket} exists and is not a socket`);
      expect(readFileSync(socket, "utf8")).toBe("not a socket\n");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a second serve on a socket that answers fails with a JSON error; the first keeps serving",
    async () => {
      const first = await startServe();
      const ws = await client(first.socket);
      const { instanceId } = await initialize(ws);
      const inode = statSync(first.socket).ino;

      const second = spawnServe(first.home, first.socket);
      const code = await exitCode(second.proc);
      expect(code).not.toBe("timeout");
      expect(code).not.toBe(0);
      const stdout = await second.stdout;
      const json = parseLastJsonLine(stdout);
      // (No toMatchObject with expect.any here: bun 1.4.5 writes the matchers into the received object.)
      expect(json?.status).toBe("error");
      expect(json.error.code).toBe("START_FAILED");
      expect(stdout.trim().split("\n")).toHaveLength(1);
      expect(json.error.message).toContain(first.socket);

      expect(statSync(first.socket).ino).toBe(inode);
      expect((await ws.request({ method: "initialize", params: { clientInfo: CLIENT_INFO } })).result.instanceId).toBe(instanceId);
      await expectStillServing(first, instanceId);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "20 concurrent clients all get answers from the same instance",
    async () => {
      const server = await startServe();
      const results = await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const ws = await client(server.socket);
          const result = await initialize(ws, { name: `client-${i}`, version: "1" });
          // Each connection keeps its own session: a second request on it is answered too.
          const unknown = await ws.request({ method: `client-${i}/ping` });
          expect(unknown.error.code).toBe(-32601);
          return { ws, result };
        }),
      );
      const ids = new Set(results.map((r) => r.result.instanceId));
      expect(ids.size).toBe(1);
      expect(results.every((r) => r.result.pid === server.proc.pid)).toBe(true);
      await Promise.all(results.map((r) => r.ws.close()));
      await expectStillServing(server, [...ids][0]);
    },
    TEST_TIMEOUT_MS,
  );
});
