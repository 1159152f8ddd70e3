// The process/* API against a real `berth serve` on a real socket: real
// processes, real pseudo-terminals, several clients, re-attach from offsets,
// scrollback truncation, limits and bad params.
import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { eventually, isAlive } from "./helpers/berth.ts";
import type { RawWs } from "./helpers/raw-ws.ts";
import { call, OutputCollector, servesPerTest, WAIT_MS, type ServeProcess } from "./helpers/session.ts";

const TEST_TIMEOUT_MS = 60_000;
const serves = servesPerTest(afterEach);
const server = serves.server;

async function client(s: ServeProcess) {
  const ws = await serves.client(s);
  return { ws, out: new OutputCollector(ws) };
}

const b64 = (text: string) => Buffer.from(text).toString("base64");

async function rpcError(ws: RawWs, method: string, params: unknown) {
  const reply = await ws.request({ method, params }, WAIT_MS);
  expect(reply.result).toBeUndefined();
  return reply.error as { code: number; message: string; data?: any };
}

describe("process/*", () => {
  test("spawn with pipes: output with offsets, exited, list, remove", async () => {
    const s = await server();
    const { ws, out } = await client(s);
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", "for i in 1 2 3; do echo line$i; done; echo err >&2; exit 3"], cwd: "/tmp", name: "counter" });
    expect(p).toMatchObject({ name: "counter", argv: ["sh", "-c", expect.any(String)], cwd: "/tmp", terminal: null, state: "running", attached: 1 });
    expect(Object.keys(p.streams).sort()).toEqual(["stderr", "stdout"]);
    expect(await out.waitExited(p.processId)).toEqual({ exitCode: 3, signal: null });
    expect(out.text(p.processId, "stdout")).toBe("line1\nline2\nline3\n");
    expect(out.text(p.processId, "stderr")).toBe("err\n");
    expect(out.log(p.processId, "stdout").firstOffset).toBe(0);
    expect(out.problems).toEqual([]);
    const { processes } = await call(ws, "process/list");
    expect(processes).toEqual([expect.objectContaining({ processId: p.processId, state: "exited", exitCode: 3, streams: { stdout: { start: 0, end: 18 }, stderr: { start: 0, end: 4 } } })]);
    await call(ws, "process/remove", { processId: p.processId });
    expect((await call(ws, "process/list")).processes).toEqual([]);
  }, TEST_TIMEOUT_MS);

  test("write and closeStdin reach the process; env is added; its own process group", async () => {
    const s = await server();
    const { ws, out } = await client(s);
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", 'echo "pg=$(ps -o pgid= -p $$ | tr -d " ") pid=$$ x=$X"; cat'], env: { X: "added" } });
    await out.waitText(p.processId, "stdout", (t) => t.includes("x=added"));
    expect(out.text(p.processId, "stdout")).toContain(`pg=${p.pid} pid=${p.pid} x=added`);
    await call(ws, "process/write", { processId: p.processId, data: b64("echoed\n") });
    await out.waitText(p.processId, "stdout", (t) => t.endsWith("echoed\n"));
    await call(ws, "process/closeStdin", { processId: p.processId });
    expect(await out.waitExited(p.processId)).toEqual({ exitCode: 0, signal: null });
  }, TEST_TIMEOUT_MS);

  test("a terminal: stty size, resize, TERM, Ctrl-C interrupts a sleep", async () => {
    const s = await server();
    const { ws, out } = await client(s);
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh"], terminal: { cols: 91, rows: 27 } });
    expect(p.terminal).toEqual({ cols: 91, rows: 27 });
    expect(Object.keys(p.streams)).toEqual(["terminal"]);
    await call(ws, "process/write", { processId: p.processId, data: b64("stty size; echo hi $TERM\n") });
    await out.waitText(p.processId, "terminal", (t) => t.includes("27 91") && t.includes("hi xterm-256color"));
    await call(ws, "process/resize", { processId: p.processId, cols: 120, rows: 40 });
    await call(ws, "process/write", { processId: p.processId, data: b64("stty size\n") });
    await out.waitText(p.processId, "terminal", (t) => t.includes("40 120"));
    await call(ws, "process/write", { processId: p.processId, data: b64("sleep 1000; echo after-sleep\n") });
    // ^C must reach a running `sleep`: wait until the shell has really started it as its child.
    expect(await eventually(() => childrenOf(p.pid).some((pid) => commandOf(pid) === "sleep 1000"), WAIT_MS)).toBe(true);
    await call(ws, "process/write", { processId: p.processId, data: b64("\x03") });
    await call(ws, "process/write", { processId: p.processId, data: b64('echo inter""rupted\n') });
    await out.waitText(p.processId, "terminal", (t) => t.includes("interrupted"));
    await call(ws, "process/write", { processId: p.processId, data: b64("exit 5\n") });
    expect(await out.waitExited(p.processId)).toEqual({ exitCode: 5, signal: null });
    expect(out.problems).toEqual([]);
  }, TEST_TIMEOUT_MS);

  test("two clients attached to one process receive identical output", async () => {
    const s = await server();
    const a = await client(s);
    const b = await client(s);
    const { process: p } = await call(a.ws, "process/spawn", { argv: ["sh", "-c", "read go; i=0; while [ $i -lt 2000 ]; do echo n$i; i=$((i+1)); done"] });
    await call(b.ws, "process/attach", { processId: p.processId });
    await call(a.ws, "process/write", { processId: p.processId, data: b64("go\n") });
    await a.out.waitExited(p.processId);
    await b.out.waitExited(p.processId);
    const textA = a.out.text(p.processId, "stdout");
    expect(textA.split("\n").length).toBe(2001);
    expect(b.out.text(p.processId, "stdout")).toBe(textA);
    expect([...a.out.problems, ...b.out.problems]).toEqual([]);
  }, TEST_TIMEOUT_MS);

  test("re-attach since an offset gets exactly the missing bytes; a process outlives its connection", async () => {
    const s = await server();
    const first = await client(s);
    const { process: p } = await call(first.ws, "process/spawn", { argv: ["sh", "-c", "i=0; while read x; do echo got$i-$x; i=$((i+1)); done"], name: "reader" });
    await call(first.ws, "process/write", { processId: p.processId, data: b64("a\nb\n") });
    const seen = await first.out.waitText(p.processId, "stdout", (t) => t === "got0-a\ngot1-b\n");
    first.ws.destroy();
    const second = await client(s);
    // Written while nobody is attached.
    await call(second.ws, "process/write", { processId: p.processId, data: b64("c\nd\n") });
    expect(await eventually(async () => (await call(second.ws, "process/list")).processes[0].streams.stdout.end === 28, WAIT_MS)).toBe(true);
    const { process: again } = await call(second.ws, "process/attach", { processId: "reader", since: { stdout: Buffer.byteLength(seen) } });
    expect(again.state).toBe("running");
    const rest = await second.out.waitText(p.processId, "stdout", (t) => t.length >= 14);
    expect(rest).toBe("got2-c\ngot3-d\n");
    expect(second.out.log(p.processId, "stdout").firstOffset).toBe(Buffer.byteLength(seen));
    expect(second.out.log(p.processId, "stdout").truncated).toBe(false);
    await call(second.ws, "process/detach", { processId: p.processId });
    await call(second.ws, "process/write", { processId: p.processId, data: b64("e\n") });
    // The process answered "e" (7 bytes more): only then does the next line prove a detached client was sent none of it.
    expect(await eventually(async () => (await call(second.ws, "process/list")).processes[0].streams.stdout.end === 35, WAIT_MS)).toBe(true);
    expect(second.out.text(p.processId, "stdout")).toBe("got2-c\ngot3-d\n");
    await call(second.ws, "process/signal", { processId: p.processId, signal: "SIGTERM" });
    const listed = await eventually(async () => (await call(second.ws, "process/list")).processes[0].state === "exited", WAIT_MS);
    expect(listed).toBe(true);
    expect((await call(second.ws, "process/list")).processes[0]).toMatchObject({ exitCode: null, signal: "SIGTERM" });
    expect(isAlive(p.pid)).toBe(false);
  }, TEST_TIMEOUT_MS);

  test("more output than scrollbackBytes while detached: truncated, newest bytes intact", async () => {
    const s = await server({ processes: { scrollbackBytes: 4096 } });
    const { ws, out } = await client(s);
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", "read go; i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done; read done"] });
    await call(ws, "process/detach", { processId: p.processId });
    await call(ws, "process/write", { processId: p.processId, data: b64("go\n") });
    const expected = Array.from({ length: 3000 }, (_, i) => `line-${i}\n`).join("");
    expect(await eventually(async () => (await call(ws, "process/list")).processes[0].streams.stdout.end === expected.length, WAIT_MS)).toBe(true);
    const { process: again } = await call(ws, "process/attach", { processId: p.processId, since: { stdout: 0 } });
    expect(again.streams.stdout).toEqual({ start: expected.length - 4096, end: expected.length });
    const got = await out.waitText(p.processId, "stdout", (t) => t.length >= 4096);
    expect(got).toBe(expected.slice(-4096));
    expect(out.log(p.processId, "stdout")).toMatchObject({ truncated: true, firstOffset: expected.length - 4096 });
    await call(ws, "process/signal", { processId: p.processId, signal: "SIGKILL" });
    expect(await out.waitExited(p.processId)).toEqual({ exitCode: null, signal: "SIGKILL" });
  }, TEST_TIMEOUT_MS);

  test("bad params name the param (-32602); unknown ids -32004; limits -32001", async () => {
    const s = await server({ processes: { max: 1 } });
    const { ws } = await client(s);
    const cases: Array<[string, unknown, number, RegExp]> = [
      ["process/spawn", { argv: "ls" }, -32602, /argv/],
      ["process/spawn", { argv: [] }, -32602, /argv/],
      ["process/spawn", { argv: ["ls", 3] }, -32602, /argv\[1\]/],
      ["process/spawn", { cwd: "relative" }, -32602, /cwd/],
      ["process/spawn", { env: { A: 1 } }, -32602, /env\.A/],
      ["process/spawn", { terminal: { cols: 0, rows: 10 } }, -32602, /terminal\.cols/],
      ["process/spawn", { name: "" }, -32602, /name/],
      ["process/spawn", { argv: ["/nonexistent/program"] }, -32004, /nonexistent/],
      ["process/attach", {}, -32602, /processId/],
      ["process/attach", { processId: "nope" }, -32004, /nope/],
      ["process/write", { processId: "nope", data: "aGk=" }, -32004, /nope/],
      ["process/write", { processId: "x", data: "not base64!" }, -32602, /data/],
      ["process/signal", { processId: "x", signal: "SIGSEGV" }, -32602, /signal/],
      ["process/resize", { processId: "x", cols: 10 }, -32602, /rows/],
      ["process/remove", { processId: "nope" }, -32004, /nope/],
    ];
    for (const [method, params, code, pattern] of cases) {
      const error = await rpcError(ws, method, params);
      expect({ method, params, code: error.code }).toEqual({ method, params, code });
      expect(error.message).toMatch(pattern);
    }
    const { process: p } = await call(ws, "process/spawn", { argv: ["sleep", "1000"], name: "one" });
    expect((await rpcError(ws, "process/spawn", { argv: ["sleep", "1"] })).code).toBe(-32001);
    expect((await rpcError(ws, "process/resize", { processId: p.processId, cols: 10, rows: 10 })).message).toMatch(/no terminal/);
    expect((await rpcError(ws, "process/remove", { processId: p.processId })).message).toMatch(/still running/);
    await call(ws, "process/signal", { processId: "one", signal: "SIGKILL" });
    expect(await eventually(async () => (await call(ws, "process/list")).processes[0].state === "exited", WAIT_MS)).toBe(true);
    expect((await rpcError(ws, "process/signal", { processId: p.processId, signal: "SIGTERM" })).code).toBe(-32004);
    expect((await rpcError(ws, "process/write", { processId: p.processId, data: "aGk=" })).code).toBe(-32004);
  }, TEST_TIMEOUT_MS);

  test("exited processes are forgotten after retainExitedMs; running ones never", async () => {
    const s = await server({ processes: { retainExitedMs: 300 } });
    const { ws, out } = await client(s);
    const { process: quick } = await call(ws, "process/spawn", { argv: ["true"] });
    const { process: long } = await call(ws, "process/spawn", { argv: ["sleep", "1000"] });
    await out.waitExited(quick.processId);
    expect(await eventually(async () => (await call(ws, "process/list")).processes.length === 1, WAIT_MS)).toBe(true);
    expect((await call(ws, "process/list")).processes[0].processId).toBe(long.processId);
    expect((await rpcError(ws, "process/attach", { processId: quick.processId })).code).toBe(-32004);
    await call(ws, "process/signal", { processId: long.processId, signal: "SIGKILL" });
  }, TEST_TIMEOUT_MS);

  test("a retainExitedMs past setTimeout's limit (~24.8 days) keeps exited processes, not 1 ms", async () => {
    const s = await server({ processes: { retainExitedMs: 30 * 86_400_000 } });
    const { ws, out } = await client(s);
    const { process: quick } = await call(ws, "process/spawn", { argv: ["true"] });
    await out.waitExited(quick.processId);
    // Time passes after its exit: another process lives 300 ms and is seen exiting.
    const { process: later } = await call(ws, "process/spawn", { argv: ["sleep", "0.3"] });
    await out.waitExited(later.processId);
    const ids = (await call(ws, "process/list")).processes.map((p: { processId: string }) => p.processId);
    expect(ids).toEqual(expect.arrayContaining([quick.processId, later.processId]));
    expect((await call(ws, "process/attach", { processId: quick.processId })).process.state).toBe("exited");
  }, TEST_TIMEOUT_MS);

  test("garbage, a half-sent frame and an abrupt disconnect affect neither the process nor another client", async () => {
    const s = await server();
    const a = await client(s);
    const { process: p } = await call(a.ws, "process/spawn", { argv: ["sh", "-c", "while read x; do echo got-$x; done"] });
    const bad = await client(s);
    await call(bad.ws, "process/attach", { processId: p.processId });
    bad.ws.send("{not json");
    bad.ws.send(JSON.stringify({ jsonrpc: "2.0", id: 5, method: "process/write", params: { processId: p.processId, data: 42 } }));
    // A frame header that promises 1000 bytes, then 10 of them, then the socket is cut.
    bad.ws.sendRaw(Buffer.concat([Buffer.from([0x81, 0xfe, 0x03, 0xe8, 1, 2, 3, 4]), Buffer.alloc(10, 0x61)]));
    bad.ws.destroy();
    await call(a.ws, "process/write", { processId: p.processId, data: b64("one\n") });
    await a.out.waitText(p.processId, "stdout", (t) => t === "got-one\n");
    expect(await eventually(async () => (await call(a.ws, "process/list")).processes[0].attached === 1, WAIT_MS)).toBe(true);
    expect(isAlive(p.pid)).toBe(true);
    await call(a.ws, "process/closeStdin", { processId: p.processId });
    expect(await a.out.waitExited(p.processId)).toEqual({ exitCode: 0, signal: null });
  }, TEST_TIMEOUT_MS);

  test("without argv: the login shell, in the home folder", async () => {
    const s = await server();
    const { ws, out } = await client(s);
    const { process: p } = await call(ws, "process/spawn", {});
    expect(p.argv[1]).toBe("-l");
    expect(p.argv[0]).toMatch(/^\//);
    expect(p.cwd).toBe(s.home.env.HOME);
    await call(ws, "process/write", { processId: p.processId, data: b64('echo "shell-ok in $(pwd)"; exit 7\n') });
    expect(await out.waitExited(p.processId)).toEqual({ exitCode: 7, signal: null });
    expect(out.text(p.processId, "stdout")).toContain(`shell-ok in ${s.home.env.HOME}`);
  }, TEST_TIMEOUT_MS);
});

/** Pids whose parent is `ppid` (from /proc; the field after the parenthesised command name). */
function childrenOf(ppid: number): number[] {
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        const stat = readFileSync(`/proc/${name}/stat`, "utf8");
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === ppid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ");
  } catch {
    return "";
  }
}
