/**
 * The idle trim (src/server/idle-trim.ts) on the compiled app-server as users
 * run it: after `idleTrimAfterMs` without a client, its executable's read-only
 * pages leave its RSS, every mapping stays, writable and relocated mappings
 * keep their private pages, the binary's pages stay in the page cache, and
 * every API family still works afterwards (loading code the trim unmapped);
 * a client that keeps calling postpones the trim; a server woken up and left
 * alone again is trimmed again.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, closeSync, copyFileSync, fsyncSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { eventually, homesPerTest, installRelease, isAlive, type TestHome } from "./helpers/berth.ts";
import { compiledPerFile } from "./helpers/compiled.ts";
import { acceptsWebSocket, apiClient, call, OutputCollector } from "./helpers/session.ts";
import type { RawWs } from "./helpers/raw-ws.ts";

const VERSION = "9.8.8";
const TEST_TIMEOUT_MS = 120_000;
/** Short enough for a fast test, long enough that `start` returning and one read of smaps come well before it. */
const QUIET_MS = 2_000;
/** How long a trim may take to show after the quiet period on a loaded machine. */
const TRIM_WAIT_MS = 20_000;
/** The busy client's call interval: many calls per quiet period. */
const BUSY_CALL_INTERVAL_MS = 100;
const STOP_WAIT_MS = 20_000;
/** A trim takes the executable's read-only RSS below this share of what it was before. */
const TRIMMED_SHARE = 1 / 3;

const compiled = compiledPerFile(beforeAll, afterAll, { version: VERSION, prefix: "berth-idle-trim-" });

const clients: RawWs[] = [];

afterEach(() => {
  for (const ws of clients.splice(0)) ws.destroy();
});
const newHome = homesPerTest(afterEach);

type Mapping = { header: string; perms: string; rssKb: number; anonymousKb: number };

/** The mappings of `path` in a process's smaps. */
function mappingsOf(pid: number, path: string): Mapping[] {
  const found: Mapping[] = [];
  let current: Mapping | undefined;
  for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const header = /^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (header) {
      current = header[2] === path || header[2] === `${path} (deleted)` ? { header: line.replace(/\s+/g, " "), perms: header[1]!, rssKb: 0, anonymousKb: 0 } : undefined;
      if (current) found.push(current);
      continue;
    }
    const field = /^(Rss|Anonymous):\s+(\d+) kB/.exec(line);
    if (current && field) current[field[1] === "Rss" ? "rssKb" : "anonymousKb"] = Number(field[2]);
  }
  return found;
}

const readOnlyRssKb = (mappings: Mapping[]) => mappings.filter((m) => m.perms[1] === "-").reduce((sum, m) => sum + m.rssKb, 0);
const vmRssKb = (pid: number) => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);

/** kB of `path` in the page cache, by util-linux's fincore (mincore over a fresh mapping). */
function cachedKb(path: string): number {
  const run = Bun.spawnSync(["fincore", "--noheadings", "--bytes", "--output", "RES", path]);
  const bytes = Number(run.stdout.toString().trim());
  if (run.exitCode !== 0 || !Number.isFinite(bytes)) throw new Error(`fincore ${path} failed: ${run.stderr.toString()}`);
  return bytes / 1024;
}

/** A home whose managed binary is the compiled file, with a short quiet period. */
function compiledHome(): { home: TestHome; binary: string } {
  const home = newHome({ install: false, prefix: "berth-trim-", settings: { idleTrimAfterMs: QUIET_MS, releaseBaseUrl: "" } });
  const binary = installRelease(home.home, VERSION, "");
  copyFileSync(compiled.berth, binary);
  chmodSync(binary, 0o755);
  // Written back, so its cached pages are clean: reclaimable, as an installed release's are (a dirty page survives MADV_PAGEOUT).
  const fd = openSync(binary, "r");
  fsyncSync(fd);
  closeSync(fd);
  return { home, binary };
}

async function startServer(home: TestHome, binary: string): Promise<number> {
  const started = await home.exec([binary, "start"]);
  expect(started.json?.status).toBe("started");
  return started.json.pid as number;
}

async function client(home: TestHome): Promise<RawWs> {
  const ws = await apiClient(home.path("daemon", "app-server.sock"));
  clients.push(ws);
  return ws;
}

/** Waits until the executable's read-only RSS in `pid` falls below TRIMMED_SHARE of `fromKb`. */
async function trimmedBelow(pid: number, binary: string, fromKb: number): Promise<boolean> {
  return eventually(() => readOnlyRssKb(mappingsOf(pid, binary)) < fromKb * TRIMMED_SHARE, TRIM_WAIT_MS, 50);
}

// Linux only: the trim (and /proc/<pid>/smaps) exists nowhere else.
describe.skipIf(process.platform !== "linux")("idle trim of the compiled app-server", () => {
  test("after the quiet period: executable pages unmapped, mappings and private pages kept, page cache kept, every API family still works", async () => {
    const { home, binary } = compiledHome();
    const pid = await startServer(home, binary);
    // A client's initialize (what start's own probe did) starts a fresh quiet period just before the looks below,
    // so that however long start took to exit on a loaded machine, they see the server untrimmed.
    await client(home);
    const before = mappingsOf(pid, binary);
    const beforeRss = vmRssKb(pid);
    const cachedBefore = cachedKb(binary);
    // Start-up touched megabytes of the executable (else this test proves nothing).
    expect(readOnlyRssKb(before)).toBeGreaterThan(4 * 1024);

    expect(await trimmedBelow(pid, binary, readOnlyRssKb(before))).toBe(true);
    const after = mappingsOf(pid, binary);
    expect(isAlive(pid)).toBe(true);
    // Every mapping is still there (DONTNEED unmaps pages, never ranges).
    expect(after.map((m) => m.header)).toEqual(before.map((m) => m.header));
    // Writable and relocated mappings were left alone: their private pages are all still there.
    for (const [index, mapping] of before.entries()) {
      if (mapping.anonymousKb > 0) expect(after[index]!.anonymousKb).toBeGreaterThanOrEqual(mapping.anonymousKb);
    }
    expect(before.some((m) => m.perms.startsWith("rw") && m.anonymousKb > 0)).toBe(true);
    expect(vmRssKb(pid)).toBeLessThan(beforeRss - 4 * 1024);
    // The pages left this process only: the page cache still holds them (MADV_PAGEOUT would evict about all it unmapped).
    const unmappedKb = readOnlyRssKb(before) - readOnlyRssKb(after);
    expect(cachedBefore - cachedKb(binary)).toBeLessThan(unmappedKb / 4);

    // The CLI's own paths come back, and only partly: a trimmed server does not refault all it had.
    const version = await home.exec([binary, "version"]);
    expect(version.json).toMatchObject({ status: "running", pid });
    const status = await home.exec([binary, "status"]);
    expect(status.code).toBe(0);
    expect(status.json?.appServer?.pid).toBe(pid);
    expect(readOnlyRssKb(mappingsOf(pid, binary))).toBeLessThan(readOnlyRssKb(before));

    // Each lazily loaded API family, first used after the trim: processes with pipes, a terminal, files, system, tunnels.
    const ws = await client(home);
    const out = new OutputCollector(ws);
    const piped = (await call(ws, "process/spawn", { argv: ["sh", "-c", "echo piped-$((40+2))"] })).process;
    await out.waitText(piped.processId, "stdout", (text) => text.includes("piped-42"));
    const terminal = (await call(ws, "process/spawn", { argv: ["sh"], terminal: { cols: 80, rows: 24 } })).process;
    await call(ws, "process/write", { processId: terminal.processId, stream: "terminal", data: Buffer.from("echo term-$((6*7))\nexit\n").toString("base64") });
    await out.waitText(terminal.processId, "terminal", (text) => text.includes("term-42"));
    const file = join(home.home, "..", "hello.txt");
    writeFileSync(file, "trimmed and well\n");
    expect(Buffer.from((await call(ws, "fs/readFile", { path: file })).data, "base64").toString()).toBe("trimmed and well\n");
    expect((await call(ws, "system/info")).hostname).toBe(hostname());
    const target = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data(socket, data) { socket.end(Buffer.from(`echo:${data}`)); } } });
    try {
      const { tunnelId } = await call(ws, "tunnel/open", { host: "127.0.0.1", port: target.port });
      expect(typeof tunnelId).toBe("string");
      await call(ws, "tunnel/close", { tunnelId });
    } finally {
      target.stop(true);
    }

    // Woken up and left alone again (the client stays connected): trimmed again.
    const woken = readOnlyRssKb(mappingsOf(pid, binary));
    expect(await trimmedBelow(pid, binary, woken)).toBe(true);
    expect(isAlive(pid)).toBe(true);
    expect(await call(ws, "process/list")).toBeDefined();
    ws.destroy();

    const stopped = await home.exec([binary, "stop"]);
    expect(stopped.json?.status).toBe("stopped");
    expect(await eventually(() => !isAlive(pid), STOP_WAIT_MS)).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("its executable deleted while it runs (an old release pruned): trimmed, and it still serves from the ' (deleted)' inode", async () => {
    const { home, binary } = compiledHome();
    const socket = home.path("daemon", "app-server.sock");
    // Started directly (no keeper), so nothing else reacts to the missing file.
    const server = Bun.spawn([binary, "serve", "--listen", `unix://${socket}`], { env: home.env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    try {
      expect(await eventually(() => acceptsWebSocket(socket), TRIM_WAIT_MS)).toBe(true);
      const ws = await client(home);
      await call(ws, "system/info");
      const before = readOnlyRssKb(mappingsOf(server.pid, binary));
      expect(before).toBeGreaterThan(4 * 1024);
      rmSync(binary);
      expect(mappingsOf(server.pid, binary).every((m) => m.header.endsWith(" (deleted)"))).toBe(true);
      expect(await trimmedBelow(server.pid, binary, before)).toBe(true);
      const piped = (await call(ws, "process/spawn", { argv: ["sh", "-c", "echo still-$((40+2))"] })).process;
      await new OutputCollector(ws).waitText(piped.processId, "stdout", (text) => text.includes("still-42"));
      expect((await call(ws, "system/info")).hostname).toBe(hostname());
      expect(isAlive(server.pid)).toBe(true);
    } finally {
      server.kill("SIGTERM");
      await server.exited;
    }
  }, TEST_TIMEOUT_MS);

  test("a client that keeps calling postpones the trim; once it stops, the trim comes", async () => {
    const { home, binary } = compiledHome();
    const pid = await startServer(home, binary);
    const ws = await client(home);
    await call(ws, "system/info");
    const peak = readOnlyRssKb(mappingsOf(pid, binary));
    expect(peak).toBeGreaterThan(4 * 1024);
    // Three quiet periods of steady calls: never trimmed meanwhile.
    const busyUntil = Date.now() + 3 * QUIET_MS;
    let lowest = peak;
    while (Date.now() < busyUntil) {
      await call(ws, "system/info");
      lowest = Math.min(lowest, readOnlyRssKb(mappingsOf(pid, binary)));
      await Bun.sleep(BUSY_CALL_INTERVAL_MS);
    }
    expect(lowest).toBeGreaterThan(peak * TRIMMED_SHARE);
    // The same measure sees the trim once the client is quiet (with the connection still open).
    expect(await trimmedBelow(pid, binary, peak)).toBe(true);
    expect((await call(ws, "system/info")).hostname).toBe(hostname());
    const stopped = await home.exec([binary, "stop"]);
    expect(stopped.json?.status).toBe("stopped");
  }, TEST_TIMEOUT_MS);
});
