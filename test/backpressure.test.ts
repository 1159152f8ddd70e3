// Slow and stalled clients against a real `berth serve`: a client that stops
// reading (Bun's WebSocket pause(), so the server sees real socket
// backpressure) never slows a process and never loses replies silently; it is
// closed at the backlog cap while another client carries on; connections
// beyond the cap are refused with 503.
import { afterEach, describe, expect, test } from "bun:test";
import { MAX_CONNECTIONS } from "../src/server/serve.ts";
import { eventually } from "./helpers/berth.ts";
import { connect, UpgradeRefused, type RawWs } from "./helpers/raw-ws.ts";
import { call, OutputCollector, servesPerTest, WAIT_MS, type ServeProcess } from "./helpers/session.ts";

const TEST_TIMEOUT_MS = 120_000;
const MIB = 1024 * 1024;
const serves = servesPerTest(afterEach);
const server = serves.server;

/** A client that sends what it is told and then stops reading its socket. */
async function stalledClient(socket: string, messages: object[]) {
  const ws = new WebSocket(`ws+unix://${socket}`) as WebSocket & { pause(): boolean };
  let received = 0;
  const ids: unknown[] = [];
  let closed = false;
  ws.onmessage = (event) => {
    received += String(event.data).length;
    const message = JSON.parse(String(event.data));
    if ("id" in message) ids.push(message.id);
  };
  ws.onclose = () => (closed = true);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error("stalled client could not connect"));
  });
  ws.send(JSON.stringify({ jsonrpc: "2.0", id: "init", method: "initialize", params: { clientInfo: { name: "stalled", version: "1" } } }));
  if (!(await eventually(() => ids.includes("init"), WAIT_MS))) throw new Error("the stalled client's initialize was never answered");
  for (const message of messages) ws.send(JSON.stringify({ jsonrpc: "2.0", ...message }));
  const handle = {
    pause: () => ws.pause(),
    resume: () => ws.resume(),
    get received() {
      return received;
    },
    ids,
    get closed() {
      return closed;
    },
    destroy: () => ws.close(),
  };
  return serves.track(handle);
}

async function client(s: ServeProcess) {
  const ws = await serves.client(s);
  return { ws, out: new OutputCollector(ws) };
}

/** Runs a process that waits for "go", writes `bytes` to stdout and reports on stderr how long that took (ns). */
async function timedWriter(ws: RawWs, out: OutputCollector, bytes: number) {
  const script = `read go; s=$(date +%s%N); head -c ${bytes} /dev/zero; e=$(date +%s%N); echo $((e-s)) >&2`;
  const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", script] });
  return {
    processId: p.processId as string,
    async go() {
      await call(ws, "process/write", { processId: p.processId, data: Buffer.from("go\n").toString("base64") });
    },
    /** Waits for the writer's exit: whether it came, its exit code, how many bytes it put out, and how long that took. */
    async finished() {
      const listed = async () => (await call(ws, "process/list")).processes.find((x: any) => x.processId === p.processId);
      const exited = await eventually(async () => (await listed())?.state === "exited", WAIT_MS * 4);
      const { exitCode, streams } = await listed();
      await call(ws, "process/attach", { processId: p.processId, since: { stdout: bytes } });
      const text = await out.waitText(p.processId, "stderr", (t) => t.endsWith("\n"));
      return { exited, exitCode, stdoutBytes: streams.stdout.end, ms: Number(text.trim()) / 1e6 };
    },
  };
}

describe("backpressure", () => {
  test("a stalled client does not slow a process, is closed at the backlog cap, and another client is unaffected", async () => {
    // A ring larger than the cap: the bytes the stalled client is owed stay in it, so once its socket is full
    // its debt passes 8 MiB and the next pump (at the latest the one at the writer's exit) closes it. With the
    // default 2 MiB ring, a server that read most of the 48 MiB before it pumped again sent the stalled client
    // the ring's tail (`truncated`) and never owed it 8 MiB: no close (seen 1 run in ~40).
    const s = await server({ processes: { scrollbackBytes: 16 * MIB } });
    const { ws, out } = await client(s);
    const BYTES = 48 * MIB;

    // Reference: the same writer with nobody attached.
    const alone = await timedWriter(ws, out, BYTES);
    await call(ws, "process/detach", { processId: alone.processId });
    await alone.go();
    const aloneDone = await alone.finished();
    expect(aloneDone).toMatchObject({ exited: true, exitCode: 0, stdoutBytes: BYTES });

    // Now: a stalled client attached, while another client keeps asking.
    const writer = await timedWriter(ws, out, BYTES);
    await call(ws, "process/detach", { processId: writer.processId });
    const stalled = await stalledClient(s.socket, [{ id: "attach", method: "process/attach", params: { processId: writer.processId } }]);
    expect(await eventually(() => stalled.ids.includes("attach"), WAIT_MS)).toBe(true);
    stalled.pause();
    await writer.go();
    const answered = await call(ws, "process/list");
    const writerDone = await writer.finished();
    // Not held back: the writer put out all 48 MiB and exited while the stalled client took none of it (it is resumed
    // only below). A server that waited for that client would have left the writer blocked on its pipe (no exit).
    const receivedWhileStalled = stalled.received;
    expect(writerDone).toMatchObject({ exited: true, exitCode: 0, stdoutBytes: BYTES });
    expect(receivedWhileStalled).toBeLessThan(MIB);
    expect(answered.processes.length).toBe(2);
    expect(out.log(writer.processId, "stdout").length).toBe(0);
    // The stalled one was cut at the cap (it sees the close once it reads again), long before it could get 48 MiB.
    const cut = await eventually(() => s.log().includes("unsent backlog over 8 MiB"), WAIT_MS);
    // Should it fail again: what the stalled client had taken and what the server said.
    expect({ cut, received: stalled.received, log: s.log().slice(-2_000) }).toMatchObject({ cut: true });
    stalled.resume();
    expect(await eventually(() => stalled.closed, WAIT_MS)).toBe(true);
    expect(stalled.received).toBeLessThan(BYTES);
    // The other client was never closed and still gets answers.
    expect((await call(ws, "process/list")).processes.length).toBe(2);
    // The times say how much an attached stalled client costs; no assertion on them: under load they are noise
    // (measured 301 ms alone, 1 268 ms attached, beside other suites).
    console.log(`writer alone ${aloneDone.ms.toFixed(0)} ms, with a stalled client attached ${writerDone.ms.toFixed(0)} ms`);
  }, TEST_TIMEOUT_MS);

  test("a client that does not read its replies: requests wait, nothing is lost silently, closed past the cap", async () => {
    const s = await server();
    const bigId = (i: number) => `${i}-${"x".repeat(60_000)}`;
    const requests = Array.from({ length: 400 }, (_, i) => ({ id: bigId(i), method: "process/list", params: {} }));
    const flood = await stalledClient(s.socket, requests);
    flood.pause();
    const cut = await eventually(() => s.log().includes("too many requests while replies were not read (1008)"), WAIT_MS * 2);
    // Failed once in ~1 200 runs (not reproduced since): should it fail again, say what the client had taken and what the server said.
    expect({ cut, received: flood.received, replies: flood.ids.length, log: s.log().slice(-2_000) }).toMatchObject({ cut: true });
    flood.resume();
    expect(await eventually(() => flood.closed, WAIT_MS)).toBe(true);
    // Whatever replies arrived are a prefix in order: none dropped in the middle.
    const got = flood.ids.filter((id) => id !== "init").map((id) => Number(String(id).split("-")[0]));
    expect(got).toEqual(Array.from({ length: got.length }, (_, i) => i));
    expect(got.length).toBeLessThan(400);
    // Others are unaffected.
    const { ws: other } = await client(s);
    expect((await call(other, "process/list")).processes).toEqual([]);
  }, TEST_TIMEOUT_MS);

  test(`connections beyond ${MAX_CONNECTIONS} are refused with 503`, async () => {
    const s = await server();
    const open: RawWs[] = [];
    for (let i = 0; i < MAX_CONNECTIONS; i++) {
      const ws = await connect(s.socket, { timeoutMs: WAIT_MS });
      open.push(serves.track(ws));
    }
    const refused = await connect(s.socket, { timeoutMs: WAIT_MS }).then(
      () => undefined,
      (error) => error,
    );
    expect(refused).toBeInstanceOf(UpgradeRefused);
    expect(refused.status).toBe(503);
    (open.pop() as RawWs).destroy();
    expect(await eventually(async () => {
      try {
        serves.track(await connect(s.socket, { timeoutMs: 2_000 }));
        return true;
      } catch {
        return false;
      }
    }, WAIT_MS)).toBe(true);
  }, TEST_TIMEOUT_MS);
});
