// Attacks on `berth connect` as a real subprocess with pipes: lines at and
// past the 1 MiB limit, CR LF split across writes, invalid UTF-8, no newline
// at EOF, and a stdout that goes away while the server sends.
import { describe, expect, test } from "bun:test";
import { BUN, MAIN, eventually } from "./helpers/berth.ts";
import { CONNECT_WAIT_MS, connectFixtures } from "./helpers/connect.ts";
import { EXIT_LINE_TOO_LONG, EXIT_STDIN_EOF, lineText, takeLines } from "../src/server/bridge.ts";
import { MAX_FRAME_BYTES } from "../src/server/serve.ts";

const TEST_TIMEOUT_MS = 120_000;
const fixtures = connectFixtures("berth-attack-connect-");

/** A process/list request whose line is exactly `bytes` long (the id pads it). */
/** A `connect` of a fresh home, connected and past `initialize`. */
async function initializedBridge() {
  const bridge = fixtures.connect(fixtures.home());
  await bridge.waitConnected();
  await bridge.initialize();
  return bridge;
}

function requestLine(id: string, bytes: number): string {
  const shell = JSON.stringify({ jsonrpc: "2.0", id: "", method: "process/list", params: {} });
  return JSON.stringify({ jsonrpc: "2.0", id: id.padEnd(bytes - shell.length, "x"), method: "process/list", params: {} });
}

describe("bridge line rules at the limit (pure)", () => {
  test("a CR LF split between two reads: the CR alone does not make the line too long", () => {
    const line = new Uint8Array(11).fill(0x61);
    line[10] = 13;
    const first = takeLines(line, 10);
    expect(first.tooLong).toBe(false);
    const second = takeLines(Buffer.concat([first.rest, Buffer.from("\n")]), 10);
    expect(second.lines.map((l) => l.length)).toEqual([10]);
    expect(takeLines(Buffer.from("aaaaaaaaaaa\r"), 10).tooLong).toBe(true);
  });

  test("lineText: invalid UTF-8 that grows past the frame limit is refused", () => {
    expect(lineText(Buffer.from([0xff, 0xff]), 6)).toBe("\ufffd\ufffd");
    expect(lineText(Buffer.from([0xff, 0xff, 0xff]), 6)).toBeUndefined();
    expect(lineText(Buffer.from("abcdef"), 6)).toBe("abcdef");
  });
});

describe("attack: berth connect", () => {
  test("a line of exactly 1 MiB goes through, with LF or CR LF; one byte more exits 65", async () => {
    const bridge = await initializedBridge();
    const exact = requestLine("a", MAX_FRAME_BYTES);
    expect(Buffer.byteLength(exact)).toBe(MAX_FRAME_BYTES);
    bridge.send(`${exact}\n`);
    expect(await eventually(() => bridge.messages().some((m) => m.id?.startsWith?.("ax") && m.result), CONNECT_WAIT_MS)).toBe(true);
    bridge.send(`${requestLine("b", MAX_FRAME_BYTES)}\r\n`);
    expect(await eventually(() => bridge.messages().some((m) => m.id?.startsWith?.("bx") && m.result) || bridge.proc.exitCode !== null, CONNECT_WAIT_MS)).toBe(true);
    expect(bridge.proc.exitCode).toBeNull();
    bridge.send(`${requestLine("c", MAX_FRAME_BYTES + 1)}\n`);
    expect(await bridge.exited).toBe(EXIT_LINE_TOO_LONG);
  }, TEST_TIMEOUT_MS);

  test("invalid UTF-8: a short line is answered; a 1 MiB line that grows past the frame limit when made valid exits 65, not 75", async () => {
    const bridge = await initializedBridge();
    const bad = Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":7,"method":"process/list","params":{"x":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}}\n')]);
    bridge.proc.stdin.write(bad);
    await bridge.proc.stdin.flush();
    expect(await eventually(() => bridge.messages().some((m) => m.id === 7), CONNECT_WAIT_MS)).toBe(true);
    // 600 KiB of 0xff: each becomes U+FFFD (3 bytes), 1.8 MiB as text.
    bridge.proc.stdin.write(Buffer.concat([Buffer.alloc(600 * 1024, 0xff), Buffer.from("\n")]));
    await bridge.proc.stdin.flush();
    expect(await bridge.exited).toBe(EXIT_LINE_TOO_LONG);
  }, TEST_TIMEOUT_MS);

  test("no newline at EOF: the last line is still a message, answered before exit 0", async () => {
    const bridge = await initializedBridge();
    bridge.send(JSON.stringify({ jsonrpc: "2.0", id: "last", method: "process/list", params: {} }));
    await bridge.proc.stdin.end();
    expect(await bridge.exited).toBe(EXIT_STDIN_EOF);
    expect(bridge.messages().find((m) => m.id === "last")?.result).toEqual({ processes: [] });
  }, TEST_TIMEOUT_MS);

  test("stdout goes away while the server sends: connect ends, the server and the process carry on", async () => {
    const home = fixtures.home();
    // Make sure the server runs, so the piped connect below only bridges.
    const first = fixtures.connect(home);
    await first.waitConnected();
    await first.initialize();
    // connect's stdout is a pipe to `head`, which leaves after 200 000 bytes; sh returns once connect has ended too.
    const sh = Bun.spawn(["sh", "-c", `"$@" | head -c 200000 >/dev/null`, "sh", BUN, MAIN, "connect"], { env: home.env, stdin: "pipe", stdout: "ignore", stderr: "ignore" });
    const lines = [
      { id: 1, method: "initialize", params: { clientInfo: { name: "attack", version: "1" } } },
      { method: "initialized" },
      { id: 2, method: "process/spawn", params: { argv: ["sh", "-c", "while :; do echo spam; done"], name: "spam" } },
    ];
    sh.stdin.write(lines.map((m) => `${JSON.stringify({ jsonrpc: "2.0", ...m })}\n`).join(""));
    await sh.stdin.flush();
    try {
      expect(await eventually(() => sh.exitCode !== null, CONNECT_WAIT_MS)).toBe(true);
    } finally {
      sh.kill("SIGKILL");
    }
    const { processes } = await first.call("process/list");
    const spam = processes.find((q: any) => q.name === "spam");
    expect(spam?.state).toBe("running");
    await first.call("process/signal", { processId: spam.processId, signal: "SIGKILL" });
  }, TEST_TIMEOUT_MS);
});
