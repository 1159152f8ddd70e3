/**
 * Input to a process (a terminal, or a stdin pipe) and the host's bound on
 * unread input (4 MiB): what counts against it is what the process has not
 * taken yet, not what it was ever sent. Real `berth serve`, real
 * pseudo-terminals and pipes, real readers.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readlinkSync, statSync } from "node:fs";
import { MAX_PENDING_INPUT_BYTES } from "../src/server/process/direct-input.ts";
import { ptyIndexOf } from "../src/server/process/pty-input.ts";
import { eventually } from "./helpers/berth.ts";
import { call, OutputCollector, servesPerTest, WAIT_MS } from "./helpers/session.ts";

const TEST_TIMEOUT_MS = 120_000;
/** A reader that takes input slowly makes room within this (it reads ~20 KB/s; the old count waited for all 4 MiB). */
const ROOM_WAIT_MS = 20_000;
const serves = servesPerTest(afterEach);
const size = (file: string) => (existsSync(file) ? statSync(file).size : 0);
/** The pty masters a process holds open. */
const masters = (pid: number) =>
  readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).endsWith("ptmx");
    } catch {
      return false;
    }
  }).length;

test("ptyIndexOf: the index of a Unix98 pty slave from tty_nr, nothing for other terminals", () => {
  for (const { ttyNr, index } of [
    { ttyNr: (136 << 8) | 0, index: 0 },
    { ttyNr: (136 << 8) | 7, index: 7 },
    { ttyNr: (136 << 8) | 0x2c | (0x300 << 12), index: 0x32c }, // pts/812: minor bits above 8 sit at bit 20
    { ttyNr: 0, index: undefined }, // no controlling terminal
    { ttyNr: (4 << 8) | 1, index: undefined }, // /dev/tty1
    { ttyNr: (5 << 8) | 0, index: undefined },
  ]) {
    expect(ptyIndexOf(ttyNr)).toBe(index);
  }
});

describe("unread input of a process", () => {
  test("a process that reads everything at once never hits the bound, however much it was sent in all", async () => {
    const s = await serves.server();
    const ws = await serves.client(s);
    const file = s.home.path("typed");
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", `stty raw -echo; echo ready; exec cat > '${file}'`], terminal: { cols: 80, rows: 24 } });
    try {
      await eventually(async () => (await call(ws, "process/list")).processes[0]?.streams.terminal.end > 0, WAIT_MS);
      // Keystrokes, as a person types them: each taken by the process before the next (so the pty never fills).
      const chunk = Buffer.alloc(4096, "k").toString("base64");
      let sent = 0;
      while (sent <= MAX_PENDING_INPUT_BYTES + 64 * 1024) {
        const reply = await ws.request({ method: "process/write", params: { processId: p.processId, data: chunk } }, WAIT_MS);
        expect(reply.error).toBeUndefined();
        sent += 4096;
        expect(await eventually(() => size(file) === sent, WAIT_MS)).toBe(true);
      }
    } finally {
      await call(ws, "process/signal", { processId: p.processId, signal: "SIGKILL" });
    }
    // Its terminal and the copy of its master that wrote the input are closed with it.
    expect(await eventually(() => masters(s.proc.pid) === 0, WAIT_MS)).toBe(true);
  }, TEST_TIMEOUT_MS);

  for (const kind of ["terminal", "pipe"] as const) {
    test(`a process that reads slowly makes room as it reads (${kind}): writes are taken again long before its whole backlog is read`, async () => {
      const s = await serves.server();
      const ws = await serves.client(s);
      const file = s.home.path("slow");
      // ~20 KB/s: the 4 MiB it is sent would take it minutes.
      const reader = `${kind === "terminal" ? "stty raw -echo; " : ""}echo ready; while :; do head -c 2048 >> '${file}'; sleep 0.1; done`;
      const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", reader], ...(kind === "terminal" ? { terminal: { cols: 80, rows: 24 } } : {}) });
      try {
        await eventually(async () => Object.values((await call(ws, "process/list")).processes[0]?.streams as Record<string, { end: number }>).some((r) => r.end > 0), WAIT_MS);
        const chunk = Buffer.alloc(64 * 1024, "s").toString("base64");
        let refused: { code: number } | undefined;
        for (let i = 0; i < 2 * (MAX_PENDING_INPUT_BYTES / (64 * 1024)) && !refused; i++) {
          refused = (await ws.request({ method: "process/write", params: { processId: p.processId, data: chunk } }, WAIT_MS)).error;
        }
        expect(refused?.code).toBe(-32001);
        // It goes on reading; 4 KiB fits as soon as it has read 4 KiB more, while most of its backlog still waits.
        const small = Buffer.alloc(4096, "t").toString("base64");
        const accepted = await eventually(async () => !(await ws.request({ method: "process/write", params: { processId: p.processId, data: small } }, WAIT_MS)).error, ROOM_WAIT_MS);
        expect(accepted).toBe(true);
        expect(size(file)).toBeLessThan(MAX_PENDING_INPUT_BYTES / 2);
      } finally {
        await call(ws, "process/signal", { processId: p.processId, signal: "SIGKILL" });
      }
    }, TEST_TIMEOUT_MS);
  }

  test("input nobody will read is refused, not taken: after closeStdin, and once the process closed its stdin (EPIPE)", async () => {
    const s = await serves.server();
    const ws = await serves.client(s);
    const data = Buffer.from("lost?").toString("base64");
    const { process: closed } = await call(ws, "process/spawn", { argv: ["sleep", "1000"] });
    const { process: closer } = await call(ws, "process/spawn", { argv: ["sh", "-c", "exec 0<&-; echo closed; exec sleep 1000"] });
    const out = new OutputCollector(ws);
    try {
      await call(ws, "process/closeStdin", { processId: closed.processId });
      const afterClose = await ws.request({ method: "process/write", params: { processId: closed.processId, data } }, WAIT_MS);
      expect(afterClose.error).toMatchObject({ code: -32004, message: expect.stringContaining("its stdin was closed") });
      await out.waitText(closer.processId, "stdout", (text) => text.includes("closed"));
      // The write that meets the closed pipe (EPIPE) and every later one say so (before: -32603, an internal error).
      for (let i = 0; i < 2; i++) {
        const reply = await ws.request({ method: "process/write", params: { processId: closer.processId, data } }, WAIT_MS);
        expect(reply.error).toMatchObject({ code: -32004, data: { errno: "EPIPE" } });
      }
    } finally {
      for (const p of [closed, closer]) await call(ws, "process/signal", { processId: p.processId, signal: "SIGKILL" });
    }
  }, TEST_TIMEOUT_MS);

  test("closeStdin after input the process has not read yet: it reads all of it, then EOF", async () => {
    const s = await serves.server();
    const ws = await serves.client(s);
    const file = s.home.path("all");
    const { process: p } = await call(ws, "process/spawn", { argv: ["sh", "-c", `read go; cat > '${file}'; echo "eof after $(wc -c < '${file}')"`] });
    const out = new OutputCollector(ws);
    const body = Buffer.alloc(MAX_PENDING_INPUT_BYTES / 2, "b");
    await call(ws, "process/write", { processId: p.processId, data: Buffer.from("go\n").toString("base64") });
    for (let at = 0; at < body.length; at += 256 * 1024) await call(ws, "process/write", { processId: p.processId, data: body.subarray(at, at + 256 * 1024).toString("base64") });
    await call(ws, "process/closeStdin", { processId: p.processId });
    expect(await out.waitExited(p.processId)).toEqual({ exitCode: 0, signal: null });
    expect(out.text(p.processId, "stdout")).toBe(`eof after ${body.length}\n`);
  }, TEST_TIMEOUT_MS);
});
