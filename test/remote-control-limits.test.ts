/**
 * Remote control before authentication: TCP connections that never finish a
 * request are bounded (at most MAX_UNAUTHENTICATED_CONNECTIONS wait at once,
 * the oldest pushed out by a new one; each gets HEAD_DEADLINE_MS), and a
 * refused request closes its connection. A real app-server started by
 * `berth start`, real TCP connections, its fds read from /proc.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { HEAD_DEADLINE_MS, MAX_UNAUTHENTICATED_CONNECTIONS } from "../src/server/remote-front.ts";
import { authorizationOf, HeadReader, MAX_HEAD_BYTES } from "../src/server/remote-head.ts";
import { eventually, makeHome, readJson, type TestHome } from "./helpers/berth.ts";
import { connectTcp, rawConnect, type RawConnection, type RawWs } from "./helpers/raw-ws.ts";

/** Connecting, a reply, a close on loopback: generous for a loaded machine. */
const WAIT_MS = 20_000;
/** Idle connections opened by the flood test: several times the cap. */
const FLOOD_CONNECTIONS = 400;
/** fds the server may open besides the connections (log rotation, a spawned helper): slack for the bounds below. */
const FD_SLACK = 24;

const homes: TestHome[] = [];
const conns: (RawConnection | RawWs)[] = [];

afterEach(async () => {
  for (const conn of conns.splice(0)) conn.destroy();
  for (const home of homes.splice(0)) await home.cleanup();
});

type Server = { home: TestHome; pid: number; hostname: string; port: number; token: string };

async function startServer(): Promise<Server> {
  const home = makeHome({ prefix: "berth-rcl-" });
  homes.push(home);
  expect((await home.run(["enable-remote-control"])).json.status).toBe("enabled");
  const started = await home.run(["start"]);
  expect(started.json).toMatchObject({ status: "started" });
  const status = await home.run(["status"]);
  const match = /^ws:\/\/127\.0\.0\.1:(\d+)\/$/.exec(status.json.appServer.remoteControl?.url ?? "");
  if (!match) throw new Error(`no remote-control URL in ${JSON.stringify(status.json.appServer)}`);
  const pid = readJson(home.path("daemon/app-server.pid")).pid as number;
  const token = readFileSync(home.path("daemon/remote-control.token"), "utf8").trim();
  return { home, pid, hostname: "127.0.0.1", port: Number(match[1]), token };
}

/**
 * The reasons the server noted for cutting connections (daemon/app-server.log). It notes its first cut at once,
 * before the connection is ended, so a close seen by the client is already explained here: this tells a connection
 * pushed out by the cap (or refused) from one cut by its head deadline, which a wait longer than the deadline cannot.
 */
const cutsNoted = (server: Server) =>
  readFileSync(server.home.path("daemon/app-server.log"), "utf8")
    .split("\n")
    .filter((line) => line.includes("remote control: cut"))
    .map((line) => line.slice(line.indexOf("the latest: ")));

const fdsOf = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const rssKiBOf = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);

async function openIdle(server: Server, count: number): Promise<RawConnection[]> {
  const opened: RawConnection[] = [];
  for (let i = 0; i < count; i += 1) {
    const conn = await rawConnect(server, WAIT_MS);
    conns.push(conn);
    opened.push(conn);
  }
  return opened;
}

/** A plain GET on an open connection; resolves with the status of the reply. */
async function statusOfRequest(conn: RawConnection, headers: string): Promise<number> {
  conn.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}\r\n`);
  const status = await conn.waitFor(() => /^HTTP\/1\.1 (\d{3})[^]*?\r\n\r\n/.exec(conn.buffered.toString("latin1"))?.[1], WAIT_MS, "an HTTP reply");
  return Number(status);
}

describe("remote control before authentication", () => {
  test("one connection past the cap pushes out the oldest waiting one; the others can still authenticate", async () => {
    const server = await startServer();
    // Opened one after the other, so the kernel queues them, and the server accepts them, in this order: the one
    // too many is accepted last, whenever the server gets to them. (No fd count here: a connection of the `status`
    // just run may still be open at a first look and closed at the next.)
    const first = await openIdle(server, MAX_UNAUTHENTICATED_CONNECTIONS);
    const extra = await openIdle(server, 1);
    await first[0]!.waitClosed(WAIT_MS);
    // Pushed out by the one too many, not cut by its head deadline (which WAIT_MS outlasts): the first cut's reason.
    expect(cutsNoted(server)).toEqual([`the latest: ${MAX_UNAUTHENTICATED_CONNECTIONS} connections already waiting to authenticate; dropped the oldest`]);
    // The second oldest was not pushed out, and its request, token included, reaches the app-server (426: a GET
    // that is not an upgrade) — it was waiting all along, not cut with the first.
    expect(await statusOfRequest(first[1]!, `Authorization: Bearer ${server.token}\r\n`)).toBe(426);
    expect(first.slice(2).every((conn) => !conn.isClosed)).toBe(true);
    expect(extra[0]!.isClosed).toBe(false);
  }, 90_000);

  test("a refused request closes its connection: no second try on a kept-alive connection", async () => {
    const server = await startServer();
    const [conn] = await openIdle(server, 1);
    let replies = 0;
    conn!.onData = () => void (replies = conn!.buffered.toString("latin1").split("HTTP/1.1 401").length - 1);
    expect(await statusOfRequest(conn!, "")).toBe(401);
    expect(conn!.buffered.toString("latin1").toLowerCase()).toContain("www-authenticate: bearer");
    expect(conn!.buffered.toString("latin1")).not.toContain(server.token);
    // A squatter asks again and again (each reply would restart a keep-alive timer): the connection must end instead.
    const again = setInterval(() => conn!.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), 500);
    try {
      await conn!.waitClosed(WAIT_MS);
    } finally {
      clearInterval(again);
    }
    expect(replies).toBe(1);
    // Closed by the refusal (an ordinary end, not a cut), not by the head deadline that WAIT_MS outlasts (a cut, noted).
    expect(cutsNoted(server)).toEqual([]);
  }, 90_000);

  test(`a flood of ${FLOOD_CONNECTIONS} idle connections: the server holds at most the cap, a client with the token gets through, the deadline ends the rest`, async () => {
    const server = await startServer();
    const before = { fds: fdsOf(server.pid), rssKiB: rssKiBOf(server.pid) };
    const flood = await openIdle(server, FLOOD_CONNECTIONS);
    /** The most fds the server was seen holding while the flood waited. */
    let peakFds = fdsOf(server.pid);
    const sample = () => (peakFds = Math.max(peakFds, fdsOf(server.pid)));
    // A byte-by-byte head (slowloris) among them: the deadline is from accept, not from the last byte.
    const trickle = (await openIdle(server, 1))[0]!;
    const head = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let sent = 0;
    const dribble = setInterval(() => trickle.write(sent < head.length ? head[sent++]! : "a"), 200);
    try {
      expect(await eventually(() => sample() > 0 && flood.filter((conn) => conn.isClosed).length >= FLOOD_CONNECTIONS - MAX_UNAUTHENTICATED_CONNECTIONS, WAIT_MS)).toBe(true);
      const during = { fds: peakFds, rssKiB: rssKiBOf(server.pid) };
      expect(peakFds).toBeLessThanOrEqual(before.fds + MAX_UNAUTHENTICATED_CONNECTIONS + FD_SLACK);

      const ws = await connectTcp(server.hostname, server.port, { headers: { Authorization: `Bearer ${server.token}` }, timeoutMs: WAIT_MS });
      conns.push(ws);
      const reply = await ws.request({ method: "initialize", params: { clientInfo: { name: "limits-test", version: "1" } } }, WAIT_MS);
      expect(reply.result?.pid).toBe(server.pid);

      // Every waiting connection is cut by the deadline, the slow one too; the authenticated one stays.
      await trickle.waitClosed(HEAD_DEADLINE_MS + WAIT_MS);
      expect(await eventually(() => flood.every((conn) => conn.isClosed), HEAD_DEADLINE_MS + WAIT_MS)).toBe(true);
      const reply2 = await ws.request({ method: "system/info", params: {} }, WAIT_MS);
      expect(reply2.error).toBeUndefined();
      expect(await eventually(() => fdsOf(server.pid) <= before.fds + 2 + FD_SLACK, WAIT_MS)).toBe(true);
      const after = { fds: fdsOf(server.pid), rssKiB: rssKiBOf(server.pid) };
      console.error(`remote-control flood of ${FLOOD_CONNECTIONS}: fds ${before.fds} → peak ${during.fds} → ${after.fds}; RSS KiB ${before.rssKiB} → ${during.rssKiB} → ${after.rssKiB}`);
    } finally {
      clearInterval(dribble);
    }
  }, 120_000);
});

describe("authorizationOf (pure)", () => {
  const cases: { name: string; head: string; value: string | null }[] = [
    { name: "the header", head: "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc", value: "Bearer abc" },
    { name: "any case, spaces trimmed", head: "GET / HTTP/1.1\r\nauthorization:   Bearer abc  ", value: "Bearer abc" },
    { name: "none", head: "GET / HTTP/1.1\r\nHost: x", value: null },
    { name: "two are refused", head: "GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b", value: null },
    { name: "a space before the colon is refused", head: "GET / HTTP/1.1\r\nAuthorization : Bearer abc", value: null },
    { name: "a folded line is refused", head: "GET / HTTP/1.1\r\nAuthorization: Bearer\r\n abc", value: null },
    { name: "the request line is not a header", head: "Authorization: Bearer abc\r\nHost: x", value: null },
  ];
  for (const { name, head, value } of cases) test(name, () => expect(authorizationOf(head)).toBe(value));
});

describe("HeadReader (pure): a head collected across reads", () => {
  const head = "GET / HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n";
  /** Feeds `text` in reads of the given sizes (the rest in one); returns the last progress and the read it came at. */
  const feed = (text: string, sizes: number[], max = MAX_HEAD_BYTES) => {
    const reader = new HeadReader(max);
    const reads: string[] = [];
    let at = 0;
    for (const size of [...sizes, text.length]) {
      if (at >= text.length) break;
      reads.push(text.slice(at, at + size));
      at += size;
    }
    let last: ReturnType<HeadReader["push"]> = { kind: "more" };
    for (const [i, read] of reads.entries()) {
      last = reader.push(Buffer.from(read, "latin1"));
      if (last.kind !== "more") return { last, read: i, reads: reads.length };
    }
    return { last, read: reads.length - 1, reads: reads.length };
  };

  test("the end found wherever the reads split it, the head without it, every byte kept", () => {
    const text = `${head}after`;
    for (let split = 1; split < text.length; split++) {
      const { last } = feed(text, [split]);
      expect(last.kind).toBe("complete");
      if (last.kind !== "complete") continue;
      expect(last.head).toBe(head.slice(0, -4));
      // Everything read up to the read that ended the head (the first, or the second with the rest).
      expect(last.bytes.toString("latin1")).toBe(split >= head.length ? text.slice(0, split) : text);
    }
  });

  test("a byte at a time: complete at the last byte of the end", () => {
    const { last, read } = feed(head, Array.from({ length: head.length }, () => 1));
    expect(last.kind).toBe("complete");
    expect(read).toBe(head.length - 1);
  });

  test("too large: no end within the bound, or an end past it; exactly at the bound is fine", () => {
    expect(feed("x".repeat(20), [5, 5, 5, 5], 16).last.kind).toBe("tooLarge");
    expect(feed(`${"x".repeat(13)}\r\n\r\n`, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 16).last.kind).toBe("tooLarge");
    const exact = feed(`${"x".repeat(12)}\r\n\r\n`, [3, 3, 3, 3, 3, 3], 16).last;
    expect(exact.kind).toBe("complete");
  });

  test("a lone CR LF pair split across reads is not an end", () => {
    expect(feed("GET / HTTP/1.1\r\nA: b\r\nC: d", [15, 1, 6, 1]).last.kind).toBe("more");
  });
});
