// tunnel/close {halfClose: true} against a real `berth serve`: the client says it has finished sending, the
// far side (a real TCP server that answers only after reading EOF, like `wc` or an HTTP/1.0 upload) reads EOF,
// and its whole answer still comes back as tunnel/data before tunnel/closed "remote". A plain tunnel/close keeps
// its old meaning (the far side's later bytes are dropped).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { eventually, type TestHome } from "./helpers/berth.ts";
import { answerAfterEof, eofAnswerLine, sha256Hex as sha } from "./helpers/eof-server.ts";
import { RpcClient, closeServedHome, openServedHome, type AppServer } from "./helpers/rpc-client.ts";

const MIB = 1024 * 1024;
const TEST_TIMEOUT_MS = 120_000;
const WAIT_MS = 20_000;
const UPLOAD_BYTES = 2 * MIB;
const UPLOAD_CHUNK_BYTES = 512 * 1024;
/** What the far side sends after EOF: more than the kernel buffers and the 1 MiB backlog mark hold. */
const ANSWER_BYTES = 3 * MIB;

let home: TestHome;
let server: AppServer;
let client: RpcClient;
const listeners: { stop(closeActive?: boolean): void }[] = [];

function farServer(answerBytes: number) {
  const far = answerAfterEof(answerBytes);
  listeners.push(far.listener);
  return far;
}

beforeAll(async () => {
  ({ home, server, client } = await openServedHome("berth-halfclose-"));
}, TEST_TIMEOUT_MS);

afterAll(async () => {
  for (const listener of listeners.splice(0)) listener.stop(true);
  await closeServedHome({ home, server, client });
});

/** Collects one tunnel's tunnel/data and tunnel/closed. */
function follow(rpc: RpcClient, tunnelId: string) {
  const state = { chunks: [] as Buffer[], closed: undefined as any };
  rpc.on("tunnel/data", (p) => {
    if (p.tunnelId === tunnelId) state.chunks.push(Buffer.from(p.data, "base64"));
  });
  rpc.on("tunnel/closed", (p) => {
    if (p.tunnelId === tunnelId) state.closed = p;
  });
  return state;
}

async function openTo(port: number) {
  const { tunnelId } = await client.call("tunnel/open", { host: "127.0.0.1", port });
  return { tunnelId: tunnelId as string, seen: follow(client, tunnelId) };
}

async function upload(tunnelId: string, data: Buffer): Promise<void> {
  for (let offset = 0; offset < data.length; offset += UPLOAD_CHUNK_BYTES) {
    await client.call("tunnel/write", { tunnelId, data: data.subarray(offset, offset + UPLOAD_CHUNK_BYTES).toString("base64") });
  }
}

function uploadData(): Buffer {
  const data = Buffer.alloc(UPLOAD_BYTES);
  for (let i = 0; i < data.length; i += 1) data[i] = (i * 7) & 0xff;
  return data;
}

test("half-close: the far side reads EOF after every byte, and its whole answer comes back before tunnel/closed remote", async () => {
  const far = farServer(ANSWER_BYTES);
  const { tunnelId, seen } = await openTo(far.port);
  const data = uploadData();
  await upload(tunnelId, data);
  expect(await client.call("tunnel/close", { tunnelId, halfClose: true })).toEqual({});

  expect(await eventually(() => seen.closed !== undefined, WAIT_MS)).toBe(true);
  expect(seen.closed).toEqual({ tunnelId, reason: "remote" });
  const peer = far.peers[0]!;
  expect(peer.sawEof).toBe(true);
  const answer = Buffer.concat(seen.chunks);
  expect(answer.length).toBe(peer.answer!.length);
  expect(answer.subarray(0, answer.indexOf(10) + 1).toString()).toBe(eofAnswerLine(data));
  expect(sha(answer)).toBe(sha(peer.answer!));
  expect(await eventually(() => peer.closed, WAIT_MS)).toBe(true);
}, TEST_TIMEOUT_MS);

test("after a half-close writes fail with -32004, a second half-close is harmless, and a plain close ends the tunnel at once", async () => {
  // A far side that never answers: the tunnel stays half-open until the client closes it.
  const silent = farServer(0);
  const peers = silent.peers;
  const { tunnelId, seen } = await openTo(silent.port);
  await upload(tunnelId, Buffer.from("all I have to say"));
  await client.call("tunnel/close", { tunnelId, halfClose: true });
  await client.call("tunnel/close", { tunnelId, halfClose: true });
  expect(await eventually(() => peers[0]?.sawEof === true, WAIT_MS)).toBe(true);
  expect(peers[0]!.bytes).toBe("all I have to say".length);
  expect(seen.closed).toBeUndefined(); // still open for the far side's bytes
  expect((await client.callError("tunnel/write", { tunnelId, data: "eA==" })).code).toBe(-32004);

  await client.call("tunnel/close", { tunnelId });
  expect(await eventually(() => seen.closed !== undefined && peers[0]!.closed, WAIT_MS)).toBe(true);
  expect(seen.closed).toEqual({ tunnelId, reason: "client" });
}, TEST_TIMEOUT_MS);

test("a plain tunnel/close keeps its meaning: the far side sees the close, and its answer after EOF is not delivered", async () => {
  const far = farServer(ANSWER_BYTES);
  const { tunnelId, seen } = await openTo(far.port);
  await upload(tunnelId, Buffer.from("short"));
  await client.call("tunnel/close", { tunnelId });
  expect(await eventually(() => seen.closed !== undefined && far.peers[0]?.closed === true, WAIT_MS)).toBe(true);
  expect(seen.closed).toEqual({ tunnelId, reason: "client" });
  expect(seen.chunks).toEqual([]);
}, TEST_TIMEOUT_MS);
