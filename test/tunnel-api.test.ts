// tunnel/* against a real `berth serve`: a real HTTP request to a loopback
// server started by the test, 20 MiB each way at once with equal hashes, a
// host outside tunnels.allowHosts, the remote side closing first, the client
// closing first, and tunnels ending with their connection.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import type { Socket, TCPSocketListener } from "bun";
import { eventually, makeHome, type TestHome } from "./helpers/berth.ts";
import { RpcClient, closeServedHome, openServedHome, startAppServer, type AppServer } from "./helpers/rpc-client.ts";

const MIB = 1024 * 1024;
const TEST_TIMEOUT_MS = 120_000;
const WAIT_MS = 20_000;
const UPLOAD_CHUNK_BYTES = 512 * 1024;

let home: TestHome;
let server: AppServer;
let client: RpcClient;
const listeners: Array<{ stop(closeActive?: boolean): void }> = [];

beforeAll(async () => {
  ({ home, server, client } = await openServedHome("berth-tunnel-"));
}, TEST_TIMEOUT_MS);

afterAll(async () => {
  for (const listener of listeners.splice(0)) listener.stop(true);
  await closeServedHome({ home, server, client });
});

/** Deterministic bytes: block i of 64 KiB is sha256-expanded from i, so both sides can hash without holding 20 MiB twice. */
function pattern(size: number, seed: string): Buffer {
  const out = Buffer.alloc(size);
  let filled = 0;
  for (let i = 0; filled < size; i++) filled += createHash("sha256").update(`${seed}:${i}`).digest().copy(out, filled);
  return out;
}

/** Collects one tunnel's tunnel/data and tunnel/closed. */
function follow(rpc: RpcClient) {
  const tunnels = new Map<string, { chunks: Buffer[]; bytes: number; hash: ReturnType<typeof createHash>; closed?: any }>();
  const get = (id: string) => {
    let entry = tunnels.get(id);
    if (!entry) tunnels.set(id, (entry = { chunks: [], bytes: 0, hash: createHash("sha256") }));
    return entry;
  };
  rpc.on("tunnel/data", (p) => {
    const entry = get(p.tunnelId);
    const data = Buffer.from(p.data, "base64");
    entry.bytes += data.length;
    entry.hash.update(data);
    if (entry.bytes <= MIB) entry.chunks.push(data); // keep only small transcripts
  });
  rpc.on("tunnel/closed", (p) => (get(p.tunnelId).closed = p));
  return get;
}

type Peer = {
  socket: Socket<undefined>;
  received: Buffer[];
  bytes: number;
  hash: ReturnType<typeof createHash>;
  closed: boolean;
  /** Resolves the next time the socket drains. */
  drained(): Promise<void>;
  wake(): void;
};

/** A loopback TCP server recording what each peer sent; `onOpen` may answer. */
function tcpServer(onOpen: (peer: Peer) => void = () => {}) {
  const peers: Peer[] = [];
  const byId = new WeakMap<Socket<undefined>, Peer>();
  const listener: TCPSocketListener<undefined> = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        const peer: Peer = {
          socket,
          received: [],
          bytes: 0,
          hash: createHash("sha256"),
          closed: false,
          wake: () => {},
          drained: () => new Promise<void>((resolve) => (peer.wake = resolve)),
        };
        byId.set(socket, peer);
        peers.push(peer);
        onOpen(peer);
      },
      data(socket, data) {
        const peer = byId.get(socket)!;
        peer.bytes += data.length;
        peer.hash.update(data);
        if (peer.bytes <= MIB) peer.received.push(Buffer.from(data));
      },
      drain(socket) {
        byId.get(socket)!.wake();
      },
      close(socket) {
        const peer = byId.get(socket)!;
        peer.closed = true;
        peer.wake();
      },
    },
  });
  listeners.push(listener);
  return { port: listener.port, peers };
}

/** Writes `data` to a Bun socket honouring its backpressure (drain). */
async function sendAll(socket: Socket<undefined>, data: Buffer, drained: () => Promise<void>) {
  let offset = 0;
  while (offset < data.length) {
    const written = socket.write(data.subarray(offset, offset + 256 * 1024));
    if (written < 0) throw new Error("socket closed while sending");
    offset += written;
    if (written < 256 * 1024 && offset < data.length) await drained();
  }
}

test("a real HTTP request through a tunnel to a loopback server", async () => {
  const http = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => new Response(`hello from ${new URL(req.url).pathname}`) });
  listeners.push(http);
  const tunnel = follow(client);
  const { tunnelId } = await client.call("tunnel/open", { host: "127.0.0.1", port: http.port });
  const request = `GET /through-berth HTTP/1.1\r\nHost: 127.0.0.1:${http.port}\r\nConnection: close\r\n\r\n`;
  await client.call("tunnel/write", { tunnelId, data: Buffer.from(request).toString("base64") });
  expect(await eventually(() => tunnel(tunnelId).closed !== undefined, WAIT_MS)).toBe(true);
  const response = Buffer.concat(tunnel(tunnelId).chunks).toString("utf8");
  expect(response).toStartWith("HTTP/1.1 200 OK\r\n");
  expect(response).toEndWith("\r\n\r\nhello from /through-berth");
  expect(tunnel(tunnelId).closed).toEqual({ tunnelId, reason: "remote" });
  expect((await client.callError("tunnel/write", { tunnelId, data: "eA==" })).code).toBe(-32004);
}, TEST_TIMEOUT_MS);

test("20 MiB each way at once arrive with equal sha256", async () => {
  const size = 20 * MIB;
  const down = pattern(size, "down");
  const up = pattern(size, "up");
  const target = tcpServer();
  const tunnel = follow(client);
  const { tunnelId } = await client.call("tunnel/open", { host: "localhost", port: target.port });
  expect(await eventually(() => target.peers.length === 1, WAIT_MS)).toBe(true);
  const peer = target.peers[0]!;
  // The TCP side sends `down` (with drain) while the client uploads `up` in chunks, each write awaited.
  const downloading = sendAll(peer.socket, down, () => peer.drained());
  for (let offset = 0; offset < size; offset += UPLOAD_CHUNK_BYTES) {
    await client.call("tunnel/write", { tunnelId, data: up.subarray(offset, offset + UPLOAD_CHUNK_BYTES).toString("base64") });
  }
  await downloading;
  expect(await eventually(() => peer.bytes === size && tunnel(tunnelId).bytes === size, WAIT_MS * 3)).toBe(true);
  expect(peer.hash.digest("hex")).toBe(createHash("sha256").update(up).digest("hex"));
  expect(tunnel(tunnelId).hash.digest("hex")).toBe(createHash("sha256").update(down).digest("hex"));
  await client.call("tunnel/close", { tunnelId });
  expect(await eventually(() => peer.closed, WAIT_MS)).toBe(true);
}, TEST_TIMEOUT_MS);

test("a host outside tunnels.allowHosts is refused with -32003; a closed port is -32004", async () => {
  for (const host of ["10.255.255.1", "example.com", "0.0.0.0"]) {
    const error = await client.callError("tunnel/open", { host, port: 80 });
    expect(error.code).toBe(-32003);
    expect(error.message).toContain("tunnels.allowHosts");
  }
  const closed = tcpServer();
  const port = closed.port;
  listeners.pop()!.stop(true);
  const refused = await client.callError("tunnel/open", { host: "127.0.0.1", port });
  expect(refused.code).toBe(-32004);
  expect(refused.data).toEqual({ errno: "ECONNREFUSED" });
  expect((await client.callError("tunnel/open", { host: "127.0.0.1", port: 0 })).code).toBe(-32602);
});

test("the remote side closing first: its last bytes, then tunnel/closed reason remote", async () => {
  const target = tcpServer((peer) => {
    peer.socket.write("last words");
    peer.socket.end();
  });
  const tunnel = follow(client);
  client.order = [];
  const { tunnelId } = await client.call("tunnel/open", { host: "127.0.0.1", port: target.port });
  expect(await eventually(() => tunnel(tunnelId).closed !== undefined, WAIT_MS)).toBe(true);
  // The client learns the tunnelId before any of its data or its close.
  expect(client.order[0]).toStartWith("reply ");
  expect(client.order.slice(1, -1).every((kind) => kind === "tunnel/data")).toBe(true);
  expect(client.order.at(-1)).toBe("tunnel/closed");
  client.order = undefined;
  expect(Buffer.concat(tunnel(tunnelId).chunks).toString()).toBe("last words");
  expect(tunnel(tunnelId).closed.reason).toBe("remote");
  expect((await client.callError("tunnel/close", { tunnelId })).code).toBe(-32004);
});

test("the client closing first: bytes written before tunnel/close arrive, then the TCP peer sees the close", async () => {
  const target = tcpServer();
  const tunnel = follow(client);
  const { tunnelId } = await client.call("tunnel/open", { host: "127.0.0.1", port: target.port });
  expect(await eventually(() => target.peers.length === 1, WAIT_MS)).toBe(true);
  await client.call("tunnel/write", { tunnelId, data: Buffer.from("goodbye").toString("base64") });
  await client.call("tunnel/close", { tunnelId });
  const peer = target.peers[0]!;
  expect(await eventually(() => peer.closed, WAIT_MS)).toBe(true);
  expect(Buffer.concat(peer.received).toString()).toBe("goodbye");
  expect(await eventually(() => tunnel(tunnelId).closed !== undefined, WAIT_MS)).toBe(true);
  expect(tunnel(tunnelId).closed.reason).toBe("client");
});

test("tunnels end with their connection", async () => {
  const target = tcpServer();
  const other = await RpcClient.open(server.socket);
  await other.call("tunnel/open", { host: "127.0.0.1", port: target.port });
  await other.call("tunnel/open", { host: "127.0.0.1", port: target.port });
  expect(await eventually(() => target.peers.length === 2, WAIT_MS)).toBe(true);
  // Another connection cannot use them.
  expect((await client.callError("tunnel/write", { tunnelId: "t1", data: "eA==" })).code).toBe(-32004);
  other.destroy();
  expect(await eventually(() => target.peers.every((peer) => peer.closed), WAIT_MS)).toBe(true);
});

test("a client that stops reading stops the tunnel's TCP reads (backlog over 1 MiB); nothing is lost when it resumes", async () => {
  const offered = 256 * MIB;
  const chunk = pattern(256 * 1024, "stream");
  const target = tcpServer();
  const slow = await RpcClient.open(server.socket);
  try {
    const tunnel = follow(slow);
    const { tunnelId } = await slow.call("tunnel/open", { host: "127.0.0.1", port: target.port });
    expect(await eventually(() => target.peers.length === 1, WAIT_MS)).toBe(true);
    const peer = target.peers[0]!;
    slow.pauseReading();
    let accepted = 0;
    const sent = createHash("sha256");
    let stop = false;
    const pushing = (async () => {
      while (!stop && accepted < offered) {
        const written = peer.socket.write(chunk);
        if (written < 0) throw new Error("peer socket closed");
        sent.update(chunk.subarray(0, written));
        accepted += written;
        if (written < chunk.length) {
          // Resend the rest first so the stream stays the same pattern.
          let rest = chunk.subarray(written);
          while (rest.length > 0 && !stop) {
            await peer.drained();
            const more = peer.socket.write(rest);
            if (more < 0) throw new Error("peer socket closed");
            sent.update(rest.subarray(0, more));
            accepted += more;
            rest = rest.subarray(more);
          }
        }
      }
    })();
    // Wait until the peer cannot push more (stable for a second), or everything was taken (no backpressure: a failure).
    let last = -1;
    let stableSince = Date.now();
    await eventually(() => {
      if (accepted !== last) {
        last = accepted;
        stableSince = Date.now();
      }
      return accepted >= offered || Date.now() - stableSince > 1_000;
    }, 60_000, 100);
    // Kernel buffers (TCP both ends, the Unix socket) plus the 1 MiB backlog and one chunk: far below what was offered.
    expect(accepted).toBeLessThan(64 * MIB);
    slow.resumeReading();
    stop = true;
    peer.wake();
    await pushing;
    expect(await eventually(() => tunnel(tunnelId).bytes === accepted, 60_000)).toBe(true);
    expect(tunnel(tunnelId).hash.digest("hex")).toBe(sent.digest("hex"));
  } finally {
    slow.destroy();
  }
}, TEST_TIMEOUT_MS);

test("settings tunnels.allowHosts replaces the loopback default; a wrong type stops the server from starting", async () => {
  const strictHome = makeHome({ install: false, prefix: "berth-tunnel-allow-", settings: { tunnels: { allowHosts: ["127.0.0.1"] } } });
  const badHome = makeHome({ install: false, prefix: "berth-tunnel-bad-", settings: { tunnels: { allowHosts: "127.0.0.1" } } });
  let strict: AppServer | undefined;
  let rpc: RpcClient | undefined;
  try {
    strict = await startAppServer(strictHome);
    rpc = await RpcClient.open(strict.socket);
    const target = tcpServer();
    expect((await rpc.callError("tunnel/open", { host: "localhost", port: target.port })).code).toBe(-32003);
    const { tunnelId } = await rpc.call("tunnel/open", { host: "127.0.0.1", port: target.port });
    await rpc.call("tunnel/close", { tunnelId });

    const bad = await badHome.run(["serve", "--listen", `unix://${badHome.path("daemon", "app-server.sock")}`], { timeoutMs: 30_000 });
    expect(bad.code).toBe(1);
    expect(bad.json?.error?.code ?? bad.stderr).toContain("STATE_CORRUPT");
  } finally {
    rpc?.destroy();
    await strict?.stop();
    await strictHome.cleanup();
    await badHome.cleanup();
  }
}, TEST_TIMEOUT_MS);

test("a TCP peer that never reads: writes beyond the per-tunnel queue bound fail with -32001, the server stays up", async () => {
  const target = tcpServer((peer) => peer.socket.pause());
  const other = await RpcClient.open(server.socket);
  try {
    const { tunnelId } = await other.call("tunnel/open", { host: "127.0.0.1", port: target.port });
    const chunk = pattern(512 * 1024, "stuck").toString("base64");
    // 64 MiB offered at once: kernel buffers take some, the tunnel's queue at most 8 MiB, the rest is refused.
    const refused: any[] = [];
    for (let i = 0; i < 128; i++) {
      // Writes still waiting for the queue to drain are answered when the connection goes (rejected then: ignored).
      other.request("tunnel/write", { tunnelId, data: chunk }, WAIT_MS).then((reply) => reply.error && refused.push(reply.error), () => {});
    }
    expect(await eventually(() => refused.length > 0, WAIT_MS)).toBe(true);
    expect(refused[0]).toMatchObject({ code: -32001 });
    expect(refused[0].message).toContain("unsent");
    expect((await client.call("system/info")).hostname).toBeString();
  } finally {
    other.destroy();
  }
  expect(await eventually(() => target.peers.every((peer) => peer.closed), WAIT_MS)).toBe(true);
}, TEST_TIMEOUT_MS);

test("writes pipelined to a TCP peer that is not reading yet arrive intact once it reads (queued bytes are the client's, not a reused decode buffer)", async () => {
  const target = tcpServer((peer) => peer.socket.pause());
  const { tunnelId } = await client.call("tunnel/open", { host: "127.0.0.1", port: target.port });
  expect(await eventually(() => target.peers.length === 1, WAIT_MS)).toBe(true);
  const peer = target.peers[0]!;
  // 6 MiB of distinct chunks, all sent before any reply: more than the kernel takes from a peer that does not read, less than the queue bound.
  const chunks = Array.from({ length: 12 }, (_, i) => pattern(512 * 1024, `pipelined-${i}`));
  const writes = chunks.map((chunk) => client.request("tunnel/write", { tunnelId, data: chunk.toString("base64") }, WAIT_MS * 3));
  // Frames are handled in order: once this is answered, every write has been decoded and queued. Then the peer reads.
  await client.call("system/info");
  peer.socket.resume();
  for (const reply of await Promise.all(writes)) expect(reply.error).toBeUndefined();
  const total = 12 * 512 * 1024;
  expect(await eventually(() => peer.bytes === total, WAIT_MS * 3)).toBe(true);
  expect(peer.hash.digest("hex")).toBe(createHash("sha256").update(Buffer.concat(chunks)).digest("hex"));
  await client.call("tunnel/close", { tunnelId });
}, TEST_TIMEOUT_MS);
