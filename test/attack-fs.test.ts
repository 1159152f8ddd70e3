// Attacks on fs/* the way a broken or hostile client would make them, against
// a real `berth serve`: pipelined reads, special files, odd paths and watch
// storms. The server's memory stays bounded and errors are the documented ones.
import { describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { attackFixtures, rpc, rssMiB, rssPeak } from "./helpers/attack.ts";
import { eventually } from "./helpers/berth.ts";
import { call, WAIT_MS } from "./helpers/session.ts";

const TEST_TIMEOUT_MS = 120_000;
const MIB = 1024 * 1024;
/** 100 pipelined 4 MiB reads: all in flight at once cost over 1 GiB; bounded, a few reads' worth. */
const PIPELINED_READS = 100;
const READS_RSS_GROWTH_MAX_MIB = 300;
/** How much longer the RSS sampler looks after the last reply, so a late peak is counted too. */
const PEAK_SAMPLING_TAIL_MS = 200;
/** 2 500 pipelined 700 KiB writes (1.7 GiB offered): all in flight grows the server by about as much; bounded, the garbage high water stays under 500 MiB. */
const PIPELINED_WRITES = 2_500;
const WRITES_RSS_GROWTH_MAX_MIB = 700;
/**
 * Watches of one folder whose path is DEEP_LEVELS names of 250 bytes deep, on a client that reads nothing,
 * while CHURN_FILES files are created there: each watch gathers every path (up to 10 000) for the client.
 * Bounded per watch only: 1.8 GiB measured for 64 watches. Bounded per connection: its 16 MiB plus garbage.
 */
const CHURN_WATCHES = 32;
const DEEP_LEVELS = 14;
const CHURN_FILES = 10_000;
const CHURN_WAIT_MS = 60_000;
const CHURN_RSS_GROWTH_MAX_MIB = 300;
/** 100 listings of 10 000 entries sent at once: all built together, +1.4 GiB (and a frozen server); a few at a time, +0.2 GiB of garbage. */
const PIPELINED_LISTINGS = 100;
const BIG_FOLDER_ENTRIES = 10_000;
const LISTING_WAIT_MS = 60_000;
const LISTINGS_RSS_GROWTH_MAX_MIB = 400;
const fx = attackFixtures();
const server = () => fx.server();
const client = fx.client;

describe("attack: fs/*", () => {
  test("pipelined 4 MiB reads are not all held in memory at once", async () => {
    const s = await server();
    const ws = await client(s);
    const file = s.home.path("big.bin");
    writeFileSync(file, Buffer.alloc(4 * MIB, 1));
    const before = rssMiB(s.proc.pid);
    const stop = rssPeak(s.proc.pid);
    for (let i = 0; i < PIPELINED_READS; i++) ws.send(JSON.stringify({ jsonrpc: "2.0", id: i, method: "fs/readFile", params: { path: file } }));
    // The client reads its replies as they come; a few 4 MiB replies at once pass the 8 MiB backlog cap
    // and the connection is closed (the spec's rule), after which the rest must cost nothing.
    let replies = 0;
    let closed = false;
    while (replies < PIPELINED_READS && !closed) {
      try {
        const reply = await ws.nextMessage(WAIT_MS);
        if (reply.result) expect(reply.result.size).toBe(4 * MIB);
        replies += 1;
      } catch {
        closed = true;
      }
    }
    // Whatever was still queued or waiting settles before the peak is read.
    const other = await client(s);
    for (let i = 0; i < 20; i++) await call(other, "fs/getMetadata", { path: file });
    // Not a wait for a condition: the RSS sampler (every 5 ms) keeps looking a little longer, so a late peak counts too.
    await Bun.sleep(PEAK_SAMPLING_TAIL_MS);
    const peak = stop();
    console.log(`${PIPELINED_READS} pipelined 4 MiB reads: ${replies} replies, closed ${closed}; RSS ${before.toFixed(1)} → peak ${peak.toFixed(1)} MiB`);
    expect(peak - before).toBeLessThan(READS_RSS_GROWTH_MAX_MIB);
    expect((await call(other, "fs/readFile", { path: file, length: 3 })).data).toBe(Buffer.from([1, 1, 1]).toString("base64"));
  }, TEST_TIMEOUT_MS);

  test("small files cost what they hold; /proc files of size 0 are read; devices and folders refused", async () => {
    const s = await server();
    const ws = await client(s);
    const file = s.home.path("small.txt");
    writeFileSync(file, "hello");
    const before = rssMiB(s.proc.pid);
    const stop = rssPeak(s.proc.pid);
    for (let i = 0; i < 2_000; i++) ws.send(JSON.stringify({ jsonrpc: "2.0", id: i, method: "fs/readFile", params: { path: file } }));
    for (let i = 0; i < 2_000; i++) expect((await ws.nextMessage(WAIT_MS)).result).toEqual({ data: Buffer.from("hello").toString("base64"), size: 5, eof: true });
    const peak = stop();
    console.log(`2000 pipelined reads of 5 bytes: RSS ${before.toFixed(1)} → peak ${peak.toFixed(1)} MiB`);
    expect(peak - before).toBeLessThan(READS_RSS_GROWTH_MAX_MIB);
    const status = await call(ws, "fs/readFile", { path: `/proc/${s.proc.pid}/status` });
    expect(Buffer.from(status.data, "base64").toString()).toContain(`Pid:\t${s.proc.pid}`);
    expect(status).toMatchObject({ size: 0, eof: true });
    const ranged = await call(ws, "fs/readFile", { path: file, offset: 1, length: 2 });
    expect(ranged).toEqual({ data: Buffer.from("el").toString("base64"), size: 5, eof: false });
    expect(await call(ws, "fs/readFile", { path: file, offset: 99 })).toEqual({ data: "", size: 5, eof: true });
    for (const path of ["/dev/zero", "/dev/urandom", s.home.home]) expect((await rpc(ws, "fs/readFile", { path })).error?.code).toBe(-32602);
    expect((await rpc(ws, "fs/readFile", { path: file, length: 4 * MIB + 1 })).error?.code).toBe(-32602);
  }, TEST_TIMEOUT_MS);

  test("writeFile onto a folder, rename over a non-empty folder, paths with .. : documented errors", async () => {
    const s = await server();
    const ws = await client(s);
    const dir = s.home.path("d");
    mkdirSync(`${dir}/sub`, { recursive: true });
    writeFileSync(`${dir}/sub/x`, "x");
    writeFileSync(s.home.path("f"), "f");
    const onDir = await rpc(ws, "fs/writeFile", { path: dir, data: "eA==" });
    expect(onDir.error).toMatchObject({ code: -32602, data: { errno: "EISDIR" } });
    const over = await rpc(ws, "fs/rename", { from: s.home.path("f"), to: dir });
    expect(over.error?.code).toBeOneOf([-32602, -32001, -32003]);
    expect(over.error?.data?.errno).toBeOneOf(["EISDIR", "ENOTEMPTY", "EEXIST"]);
    const dirOver = await rpc(ws, "fs/rename", { from: `${dir}/sub`, to: s.home.path("f") });
    expect(dirOver.error?.data?.errno).toBe("ENOTDIR");
    // ".." is an ordinary absolute path: it resolves like the kernel resolves it (the user's own permissions apply).
    const dotted = await call(ws, "fs/readFile", { path: `${dir}/sub/../sub/x` });
    expect(Buffer.from(dotted.data, "base64").toString()).toBe("x");
    expect(readFileSync(s.home.path("f"), "utf8")).toBe("f");
  }, TEST_TIMEOUT_MS);

  test("a recursive watch of / is refused with -32001 without freezing the server; the total is bounded; small ones work", async () => {
    const s = await server();
    const ws = await client(s);
    const other = await client(s);
    let watching = true;
    let slowest = 0;
    const watched = rpc(ws, "fs/watch", { path: "/", recursive: true }).finally(() => (watching = false));
    // Another client keeps being served meanwhile.
    while (watching) {
      const started = Date.now();
      await call(other, "process/list");
      slowest = Math.max(slowest, Date.now() - started);
      await Bun.sleep(5);
    }
    const reply = await watched;
    console.log(`fs/watch / recursive: ${JSON.stringify(reply.error ?? reply.result)}; slowest reply to another client ${slowest} ms`);
    expect(reply.error?.code).toBe(-32001);
    // Trees of 6 000 folders: one fits, the total stops the ninth.
    const tree = s.home.path("tree");
    for (let i = 0; i < 60; i++) for (let j = 0; j < 99; j++) mkdirSync(`${tree}/${i}/${j}`, { recursive: true });
    const many = await Promise.all(Array.from({ length: 9 }, () => rpc(ws, "fs/watch", { path: tree, recursive: true })));
    expect(many.filter((r) => r.result).length).toBe(8);
    expect(many.find((r) => r.error)?.error?.code).toBe(-32001);
    // Unwatching gives the folders back.
    await call(ws, "fs/unwatch", { watchId: many.find((r) => r.result)?.result.watchId });
    expect((await rpc(ws, "fs/watch", { path: tree, recursive: true })).result?.watchId).toBeString();
  }, TEST_TIMEOUT_MS);

  test(`${CHURN_WATCHES} watches of one deep folder on a client that stopped reading: the changes they gather are bounded per connection`, async () => {
    const s = await server();
    const ws = await client(s);
    const witness = await client(s);
    let root = s.home.path("deep");
    for (let i = 0; i < DEEP_LEVELS; i++) root = `${root}/${"d".repeat(250)}${i}`;
    mkdirSync(root, { recursive: true });
    for (let i = 0; i < CHURN_WATCHES; i++) await call(ws, "fs/watch", { path: root });
    // The witness reads and watches another folder: inotify reports in order, so its fs/changed for a file
    // made there after the churn says the server has seen every change before it.
    const marks = s.home.path("marks");
    mkdirSync(marks);
    const { watchId } = await call(witness, "fs/watch", { path: marks });
    (ws.conn as unknown as { socket: { pause(): void } }).socket.pause();
    const before = rssMiB(s.proc.pid);
    const peak = rssPeak(s.proc.pid);
    const name = "f".repeat(200);
    const churn = Bun.spawn(["sh", "-c", `cd "$1" && i=0; while [ $i -lt ${CHURN_FILES} ]; do : > ${name}$i; i=$((i+1)); done`, "sh", root]);
    fx.strangers.push(churn.pid);
    expect(await churn.exited).toBe(0);
    writeFileSync(`${marks}/last`, "");
    const sawLast = () => (witness.pending as string[]).some((text) => text.includes(watchId) && text.includes(`${marks}/last"`));
    expect(await eventually(sawLast, CHURN_WAIT_MS)).toBe(true);
    await Bun.sleep(PEAK_SAMPLING_TAIL_MS);
    const highest = peak();
    console.log(`${CHURN_WATCHES} watches × ${CHURN_FILES} changes of ${root.length + 201}-byte paths, unread: RSS ${before.toFixed(1)} → peak ${highest.toFixed(1)} MiB`);
    expect(highest - before).toBeLessThan(CHURN_RSS_GROWTH_MAX_MIB);
  }, TEST_TIMEOUT_MS);

  test(`${PIPELINED_LISTINGS} pipelined listings of a ${BIG_FOLDER_ENTRIES}-entry folder are not all built at once; another client is still served`, async () => {
    const s = await server();
    const ws = await client(s);
    const other = await client(s);
    const folder = s.home.path("big");
    mkdirSync(folder);
    const made = Bun.spawnSync(["sh", "-c", `cd "$1" && seq 1 ${BIG_FOLDER_ENTRIES} | sed 's/^/an-entry-of-a-big-folder-/' | xargs touch`, "sh", folder]);
    expect(made.exitCode).toBe(0);
    const before = rssMiB(s.proc.pid);
    const peak = rssPeak(s.proc.pid);
    for (let i = 0; i < PIPELINED_LISTINGS; i++) ws.send(JSON.stringify({ jsonrpc: "2.0", id: `l${i}`, method: "fs/readDirectory", params: { path: folder } }));
    expect((await call(other, "fs/getMetadata", { path: folder }, LISTING_WAIT_MS)).type).toBe("directory");
    // Each listing is answered in turn, unless the client's backlog closes its connection first (it re-lists then).
    let answered = 0;
    const closed = ws.closed.then(() => true);
    while (answered < PIPELINED_LISTINGS && !(await Promise.race([closed, Bun.sleep(0).then(() => false)]))) {
      const reply = await Promise.race([ws.nextMessage(LISTING_WAIT_MS), closed.then(() => undefined)]);
      if (reply?.result) expect(reply.result.entries).toHaveLength(BIG_FOLDER_ENTRIES);
      if (reply) answered += 1;
    }
    await Bun.sleep(PEAK_SAMPLING_TAIL_MS);
    const highest = peak();
    console.log(`${PIPELINED_LISTINGS} pipelined listings of ${BIG_FOLDER_ENTRIES} entries: ${answered} answered, RSS ${before.toFixed(1)} → peak ${highest.toFixed(1)} MiB`);
    expect(highest - before).toBeLessThan(LISTINGS_RSS_GROWTH_MAX_MIB);
  }, TEST_TIMEOUT_MS);

  test("pipelined 700 KiB writes are not all held at once: the client is slowed by TCP backpressure, not closed", async () => {
    const s = await server();
    const ws = await client(s);
    const data = Buffer.alloc(700 * 1024, 7).toString("base64");
    const before = rssMiB(s.proc.pid);
    const stop = rssPeak(s.proc.pid);
    for (let i = 0; i < PIPELINED_WRITES; i++) {
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: i, method: "fs/writeFile", params: { path: s.home.path(`f${i % 10}`), data } }));
    }
    let errors = 0;
    for (let i = 0; i < PIPELINED_WRITES; i++) if ((await ws.nextMessage(WAIT_MS)).error) errors += 1;
    const peak = stop();
    console.log(`${PIPELINED_WRITES} pipelined 700 KiB writes: ${errors} errors; RSS ${before.toFixed(1)} → peak ${peak.toFixed(1)} MiB`);
    expect(errors).toBe(0);
    expect(peak - before).toBeLessThan(WRITES_RSS_GROWTH_MAX_MIB);
  }, TEST_TIMEOUT_MS);
});
