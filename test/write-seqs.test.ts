/**
 * Exactly-once process/write: the host's pure decision and its bounded memory
 * of writers (tables), the client's choice of what to send again, and the
 * `writer`/`seq` params against a real `berth serve` on a real socket.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { nextPendingWrite } from "../src/client/input.ts";
import { MAX_WRITER_ID_CHARS, MAX_WRITERS_PER_PROCESS, WriterSeqs, writeDecision } from "../src/server/process/write-seqs.ts";
import { rpc, type RpcReply } from "./helpers/attack.ts";
import { eventually } from "./helpers/berth.ts";
import { call, OutputCollector, servesPerTest, WAIT_MS } from "./helpers/session.ts";

const TEST_TIMEOUT_MS = 60_000;
/** Writes of 512 KiB to a process reading nothing: the 4 MiB bound on unread input refuses one within a dozen. */
const FILL_CHUNK = Buffer.alloc(512 * 1024, 0x61).toString("base64");
const FILL_MAX_WRITES = 64;
const b64 = (text: string) => Buffer.from(text).toString("base64");

describe("writeDecision (pure)", () => {
  test.each([
    [undefined, 0, "apply"],
    [undefined, 7, "apply"],
    [3, 4, "apply"],
    [3, 5, "apply"], // a gap: seqs only have to increase
    [3, 3, "duplicate"], // the same chunk sent again after a reconnect
    [3, 2, "duplicate"], // an older send arriving late on a dead connection's bridge
    [0, 0, "duplicate"],
  ] as const)("last %p, seq %p → %p", (last, seq, expected) => {
    expect(writeDecision(last, seq)).toBe(expected);
  });
});

describe("WriterSeqs", () => {
  test("remembers the highest applied seq per writer, each writer apart", () => {
    const seqs = new WriterSeqs();
    expect(seqs.decide("a", 1)).toBe("apply");
    seqs.applied("a", 1);
    expect(seqs.decide("a", 1)).toBe("duplicate");
    expect(seqs.decide("b", 1)).toBe("apply");
    seqs.applied("a", 4);
    expect(seqs.decide("a", 3)).toBe("duplicate");
    expect(seqs.decide("a", 5)).toBe("apply");
  });

  test(`keeps at most ${MAX_WRITERS_PER_PROCESS} writers, forgetting the one that wrote least recently`, () => {
    const seqs = new WriterSeqs();
    for (let i = 0; i < MAX_WRITERS_PER_PROCESS; i++) seqs.applied(`w${i}`, 10);
    seqs.applied("w0", 11); // w0 writes again: w1 is now the oldest
    seqs.applied("new", 1);
    expect(seqs.writers).toBe(MAX_WRITERS_PER_PROCESS);
    expect(seqs.decide("w1", 10)).toBe("apply");
    expect(seqs.decide("w0", 11)).toBe("duplicate");
    expect(seqs.decide("w2", 10)).toBe("duplicate");
  });
});

describe("nextPendingWrite (pure, the client)", () => {
  const head = () => new Uint8Array([1, 2, 3]);
  const pinned = { seq: 4, bytes: new Uint8Array([9]), pinned: true };
  test.each([
    ["nothing pending: the next seq, the queue's head", undefined, 3, { seq: 4, bytes: [1, 2, 3], pinned: false }],
    ["a refused chunk: its seq, bytes chosen anew (it was not applied)", { seq: 4, bytes: new Uint8Array([9, 9, 9, 9]), pinned: false }, 4, { seq: 4, bytes: [1, 2, 3], pinned: false }],
    ["an unanswered chunk: the same seq and the same bytes", pinned, 4, { seq: 4, bytes: [9], pinned: true }],
  ] as const)("%s", (_name, pending, lastSeq, expected) => {
    const next = nextPendingWrite(pending, lastSeq, head);
    expect({ ...next, bytes: [...next.bytes] }).toEqual(expected as never);
  });
});

const serves = servesPerTest(afterEach);

describe("process/write with writer and seq", () => {
  test("a repeated or older seq is answered duplicate and not written; a gap, another writer and plain writes are written", async () => {
    const s = await serves.server();
    const ws = await serves.client(s);
    const out = new OutputCollector(ws);
    const { process: p } = await call(ws, "process/spawn", { argv: ["cat"] });
    const write = (text: string, extra: object = {}) => call(ws, "process/write", { processId: p.processId, data: b64(text), ...extra });
    expect(await write("a\n", { writer: "one", seq: 1 })).toEqual({});
    expect(await write("a\n", { writer: "one", seq: 1 })).toEqual({ duplicate: true });
    expect(await write("b\n", { writer: "one", seq: 3 })).toEqual({});
    expect(await write("x\n", { writer: "one", seq: 2 })).toEqual({ duplicate: true });
    expect(await write("c\n", { writer: "two", seq: 1 })).toEqual({});
    expect(await write("d\n")).toEqual({});
    expect(await write("d\n")).toEqual({});
    await call(ws, "process/closeStdin", { processId: p.processId });
    await out.waitExited(p.processId);
    expect(out.text(p.processId, "stdout")).toBe("a\nb\nc\nd\nd\n");
  }, TEST_TIMEOUT_MS);

  test.each([
    ["a writer without seq", { writer: "one" }, /writer and seq go together/],
    ["a seq without writer", { seq: 1 }, /writer and seq go together/],
    ["a writer id too long", { writer: "x".repeat(MAX_WRITER_ID_CHARS + 1), seq: 1 }, /writer must be 1 to 64 characters/],
    ["a writer id with a space", { writer: "a b", seq: 1 }, /writer must be/],
    ["a negative seq", { writer: "one", seq: -1 }, /seq must be an integer/],
  ])("%s is refused as invalid params", async (_name, extra, message) => {
    const s = await serves.server();
    const ws = await serves.client(s);
    const { process: p } = await call(ws, "process/spawn", { argv: ["sleep", "1000"] });
    const reply = await rpc(ws, "process/write", { processId: p.processId, data: b64("x"), ...extra });
    expect(reply.error?.code).toBe(-32602);
    expect(reply.error?.message).toMatch(message);
  }, TEST_TIMEOUT_MS);

  test("a write refused for unread input (-32001) was not applied: sent again with the same seq, it is written once", async () => {
    const s = await serves.server();
    const ws = await serves.client(s);
    const out = new OutputCollector(ws);
    // Reads nothing until SIGUSR1, then counts what it reads.
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", 'trap "exec wc -c" USR1; while :; do sleep 0.05; done'] });
    let seq = 0;
    let refused = false;
    while (!refused && seq < FILL_MAX_WRITES) {
      seq += 1;
      const reply = await rpc(ws, "process/write", { processId: p.processId, data: FILL_CHUNK, writer: "one", seq });
      refused = reply.error?.code === -32001;
      if (!refused) expect(reply.result).toEqual({});
    }
    expect(refused).toBe(true);
    await call(ws, "process/signal", { processId: p.processId, signal: "SIGUSR1" });
    // The refused seq, offered again until there is room: written, then a duplicate.
    let reply: RpcReply | undefined;
    const offer = async () => (reply = await rpc(ws, "process/write", { processId: p.processId, data: FILL_CHUNK, writer: "one", seq })).error?.code !== -32001;
    expect(await eventually(offer, WAIT_MS, 50)).toBe(true);
    expect(reply?.result).toEqual({});
    expect((await rpc(ws, "process/write", { processId: p.processId, data: FILL_CHUNK, writer: "one", seq })).result).toEqual({ duplicate: true });
    await call(ws, "process/closeStdin", { processId: p.processId });
    await out.waitExited(p.processId);
    expect(Number(out.text(p.processId, "stdout").trim())).toBe(seq * 512 * 1024);
  }, TEST_TIMEOUT_MS);
});
