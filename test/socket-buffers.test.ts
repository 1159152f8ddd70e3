// Kernel send buffers of Unix sockets carrying bulk data (Linux): the FFI
// helper raises exactly the sockets on the given path, and a real app-server
// and a real `berth connect` raise their socket's buffer once it first has a
// backlog (seen from outside with `ss`, as the kernel reports it).
import { afterAll, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { raiseUnixSendBuffers, unixSendBufferBytes } from "../src/platform/ffi.ts";
import { UNIX_SEND_BUFFER_BYTES } from "../src/server/conn.ts";
import { eventually, makeHome, type TestHome } from "./helpers/berth.ts";
import { connectFixtures } from "./helpers/connect.ts";
import { tcpSender } from "./helpers/tcp-sender.ts";
import { RpcClient, startAppServer, type AppServer } from "./helpers/rpc-client.ts";

const WAIT_MS = 20_000;
const MIB = 1024 * 1024;
const linux = process.platform === "linux";
const ssAvailable = linux && Bun.which("ss") !== null;

const { home: newConnectHome, connect } = connectFixtures("berth-sockbuf-connect-");
const homes: TestHome[] = [];
afterAll(async () => {
  for (const home of homes.splice(0)) await home.cleanup();
});

/** A Unix WebSocket server and one client, both in this process. */
async function unixPair(path: string) {
  rmSync(path, { force: true });
  const server = Bun.serve({ unix: path, fetch: (req, s) => (s.upgrade(req) ? undefined : new Response("no")), websocket: { message() {} } });
  const ws = new WebSocket(`ws+unix://${path}`);
  await new Promise<void>((resolve, reject) => ((ws.onopen = () => resolve()), (ws.onerror = () => reject(new Error("connect failed")))));
  return {
    close: () => {
      ws.close();
      server.stop(true);
    },
  };
}

test.skipIf(!linux)("raiseUnixSendBuffers raises the accepted and the client end on its path, and nothing else", async () => {
  const home = makeHome({ install: false, prefix: "berth-sockbuf-" });
  homes.push(home);
  const ours = await unixPair(home.path("ours.sock"));
  const other = await unixPair(home.path("other.sock"));
  try {
    const before = unixSendBufferBytes(home.path("ours.sock"));
    expect(before).toHaveLength(3); // the listener, the accepted end, the client end
    expect(Math.max(...before)).toBeLessThan(UNIX_SEND_BUFFER_BYTES * 2);
    const otherBefore = unixSendBufferBytes(home.path("other.sock"));

    expect(raiseUnixSendBuffers(home.path("ours.sock"), UNIX_SEND_BUFFER_BYTES)).toBe(3);
    for (const size of unixSendBufferBytes(home.path("ours.sock"))) expect(size).toBeGreaterThanOrEqual(UNIX_SEND_BUFFER_BYTES * 2);
    expect(unixSendBufferBytes(home.path("other.sock"))).toEqual(otherBefore);
    // Already large enough: nothing to do the second time.
    expect(raiseUnixSendBuffers(home.path("ours.sock"), UNIX_SEND_BUFFER_BYTES)).toBe(0);
  } finally {
    ours.close();
    other.close();
  }
});

/** The kernel's send buffer (`tb`) of each of `pid`'s Unix connections (accepted on `path` when given), from `ss -xmp`. */
function sendBuffersOf(pid: number, path?: string): number[] {
  const out = Bun.spawnSync(["ss", "-xmpH", ...(path ? ["src", path] : [])]).stdout.toString();
  return out
    .split("\n")
    .filter((line) => line.includes(`pid=${pid},`))
    .map((line) => Number(/\btb(\d+)/.exec(line)?.[1] ?? Number.NaN));
}

test.skipIf(!ssAvailable)("the app-server raises a connection's send buffer when that connection first has a backlog", async () => {
  const home = makeHome({ install: false, prefix: "berth-sockbuf-" });
  homes.push(home);
  let server: AppServer | undefined;
  let client: RpcClient | undefined;
  const peer = tcpSender(Buffer.alloc(4 * MIB, 7));
  try {
    server = await startAppServer(home);
    client = await RpcClient.open(server.socket);
    const socketPath = server.socket;
    const pid = server.pid;
    // Small replies leave no backlog: the default buffer stays.
    await client.call("system/info", {});
    const before = sendBuffersOf(pid, socketPath); // ours, and perhaps the readiness probe's if not yet closed
    expect(before.length).toBeGreaterThan(0);
    expect(Math.max(...before)).toBeLessThan(UNIX_SEND_BUFFER_BYTES * 2);

    let received = 0;
    client.on("tunnel/data", (p) => (received += Buffer.from(p.data, "base64").length));
    await client.call("tunnel/open", { host: "127.0.0.1", port: peer.port });
    expect(await eventually(() => received >= 4 * MIB, WAIT_MS)).toBe(true);
    const raised = () => {
      const sizes = sendBuffersOf(pid, socketPath);
      return sizes.length > 0 && Math.min(...sizes) >= UNIX_SEND_BUFFER_BYTES * 2;
    };
    expect(await eventually(raised, WAIT_MS)).toBe(true);
  } finally {
    client?.destroy();
    await server?.stop();
    peer.stop();
  }
}, 60_000);

test.skipIf(!ssAvailable)("berth connect raises its socket's send buffer when its first big line leaves a backlog", async () => {
  const home = newConnectHome();
  const bridge = connect(home);
  await bridge.waitConnected();
  await bridge.initialize();
  const { process: sink } = await bridge.call("process/spawn", { argv: ["sh", "-c", "cat > /dev/null"] });
  const pid = bridge.proc.pid;
  const before = sendBuffersOf(pid);
  expect(before.length).toBeGreaterThan(0);
  expect(Math.max(...before)).toBeLessThan(UNIX_SEND_BUFFER_BYTES * 2);
  // Lines of ~700 KB: more than Linux's default buffer takes at once.
  const data = Buffer.alloc(512 * 1024, 1).toString("base64");
  for (let i = 0; i < 3; i++) await bridge.call("process/write", { processId: sink.processId, data });
  expect(await eventually(() => Math.max(...sendBuffersOf(pid)) >= UNIX_SEND_BUFFER_BYTES * 2, WAIT_MS)).toBe(true);
  await bridge.call("process/signal", { processId: sink.processId, signal: "SIGKILL" });
}, 90_000);
