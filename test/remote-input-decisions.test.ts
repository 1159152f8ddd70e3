// The pure pieces of remote input (src/client/input.ts), as tables: the ordered queue, the retry backoff,
// the size of the next write, what a failed write means, and the exit status of a follower that gave up.
import { describe, expect, test } from "bun:test";
import { exitStatusOf } from "../src/client/commands.ts";
import { ConnectionClosed, RpcError } from "../src/client/connection.ts";
import {
  classifyWriteFailure,
  INPUT_RETRY_MAX_DELAY_MS,
  INPUT_WRITE_MAX_BYTES,
  INPUT_WRITE_MIN_BYTES,
  InputQueue,
  inputRetryDelayMs,
  nextWriteBytes,
  type WriteFailure,
} from "../src/client/input.ts";
import { KeyboardInput } from "../src/client/keyboard.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (data: Uint8Array) => new TextDecoder().decode(data);

describe("InputQueue keeps input in order and hands it out in bounded pieces", () => {
  const cases: { push: string[]; peek: number; shift?: number; out: string; left: number }[] = [
    { push: [], peek: 4, out: "", left: 0 },
    { push: ["abc"], peek: 10, out: "abc", left: 3 },
    { push: ["abcdef"], peek: 4, out: "abcd", left: 6 },
    { push: ["ab", "cd", "ef"], peek: 5, out: "abcde", left: 6 },
    { push: ["ab", "", "cd"], peek: 10, out: "abcd", left: 4 },
    { push: ["ab", "cd", "ef"], peek: 10, shift: 3, out: "def", left: 3 },
    { push: ["ab", "cd"], peek: 10, shift: 4, out: "", left: 0 },
    { push: ["abcdef", "gh"], peek: 4, shift: 2, out: "cdef", left: 6 },
  ];
  for (const { push, peek, shift, out, left } of cases) {
    test(`${JSON.stringify(push)} shift ${shift ?? 0}, peek ${peek} → ${JSON.stringify(out)}`, () => {
      const queue = new InputQueue();
      for (const piece of push) queue.push(bytes(piece));
      if (shift) queue.shift(shift);
      expect(text(queue.peek(peek))).toBe(out);
      expect(queue.bytes).toBe(left);
      expect(text(queue.peek(peek))).toBe(out); // a peek takes nothing
    });
  }

  test("a pushed buffer is copied: its owner may reuse it", () => {
    const queue = new InputQueue();
    const buffer = bytes("keys");
    queue.push(buffer);
    buffer.fill(0);
    expect(text(queue.peek(10))).toBe("keys");
  });

  test("clear says how much it dropped", () => {
    const queue = new InputQueue();
    queue.push(bytes("abc"));
    queue.push(bytes("de"));
    expect(queue.clear()).toBe(5);
    expect(queue.bytes).toBe(0);
    expect(queue.peek(10).length).toBe(0);
  });
});

describe("refused input: backoff, write size, and what a failure means", () => {
  test("inputRetryDelayMs doubles from 20 ms and never passes its cap", () => {
    expect([0, 1, 2, 3, 4, 5, 6, 50].map(inputRetryDelayMs)).toEqual([20, 40, 80, 160, 320, 500, 500, 500]);
    expect(inputRetryDelayMs(-1)).toBe(20);
    expect(inputRetryDelayMs(1_000)).toBe(INPUT_RETRY_MAX_DELAY_MS);
  });

  const sizes: [number, boolean, number][] = [
    [INPUT_WRITE_MAX_BYTES, true, INPUT_WRITE_MAX_BYTES / 2],
    [INPUT_WRITE_MIN_BYTES, true, INPUT_WRITE_MIN_BYTES],
    [INPUT_WRITE_MIN_BYTES + 1, true, INPUT_WRITE_MIN_BYTES],
    [INPUT_WRITE_MIN_BYTES, false, INPUT_WRITE_MIN_BYTES * 2],
    // A reader that makes room a few bytes at a time gets writes that small: any byte taken counts.
    [4096, true, 2048],
    [INPUT_WRITE_MAX_BYTES, false, INPUT_WRITE_MAX_BYTES],
    [INPUT_WRITE_MAX_BYTES - 1, false, INPUT_WRITE_MAX_BYTES],
  ];
  for (const [current, refused, next] of sizes) {
    test(`nextWriteBytes(${current}, ${refused ? "refused" : "taken"}) → ${next}`, () => expect(nextWriteBytes(current, refused)).toBe(next));
  }

  const failures: [string, unknown, WriteFailure][] = [
    ["-32001 (unread input over the bound)", new RpcError(-32001, "has not read"), "refused"],
    ["-32004 (the process exited)", new RpcError(-32004, "has exited"), "rejected"],
    ["-32602 (invalid params)", new RpcError(-32602, "invalid params"), "rejected"],
    ["the connection closed", new ConnectionClosed({ code: null, signal: "SIGKILL", stderr: "" }), "unanswered"],
    ["no answer in time", new Error("process/write got no answer"), "unanswered"],
  ];
  for (const [name, error, kind] of failures) test(`${name} → ${kind}`, () => expect(classifyWriteFailure(error)).toBe(kind));

  test("a follower that gave up on its input exits 1, as a failure", () => {
    expect(exitStatusOf({ kind: "inputRefused", reason: "x" })).toBe(1);
    expect(exitStatusOf({ kind: "lost", reason: "x" })).toBe(1);
    expect(exitStatusOf({ kind: "exited", exitCode: 0, signal: null })).toBe(0);
  });
});

describe("KeyboardInput: the detach key is read while the follower holds input", () => {
  /** A sink that holds after each write until the test lets it go; records what it got, in order. */
  function sink() {
    const got: string[] = [];
    let gate: PromiseWithResolvers<void> | undefined;
    let detached = 0;
    return {
      got,
      get detached() {
        return detached;
      },
      holding: true,
      write(data: Uint8Array) {
        got.push(text(data));
        if (!this.holding) return undefined;
        gate ??= Promise.withResolvers<void>();
        return gate.promise;
      },
      detach: () => void (detached += 1),
      release() {
        this.holding = false;
        gate?.resolve();
        gate = undefined;
      },
    };
  }
  const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

  test("while held, reads go on and are kept; the hold's end hands them over in order", async () => {
    const s = sink();
    const keyboard = new KeyboardInput(s, 0x1c);
    expect(keyboard.take(bytes("ab"))).toBeUndefined();
    expect(keyboard.take(bytes("cd"))).toBeUndefined();
    expect(keyboard.take(bytes("ef"))).toBeUndefined();
    expect(s.got).toEqual(["ab"]);
    expect(keyboard.heldBytes).toBe(4);
    s.release();
    await tick();
    expect(s.got.join("")).toBe("abcdef");
    expect(keyboard.heldBytes).toBe(0);
  });

  test("the detach key while held: what came before it goes to the sink first, then the detach; nothing after it", () => {
    const s = sink();
    const keyboard = new KeyboardInput(s, 0x1c);
    keyboard.take(bytes("ab"));
    keyboard.take(bytes("cd"));
    expect(keyboard.take(bytes("e\x1cfg"))).toBeUndefined();
    expect(s.got.join("")).toBe("abcde");
    expect(s.detached).toBe(1);
    keyboard.take(bytes("later"));
    expect(s.got.join("")).toBe("abcde");
  });

  test("past its bound it asks the terminal to stop being read, until the hold ends", async () => {
    const s = sink();
    const keyboard = new KeyboardInput(s, 0x1c, 4);
    keyboard.take(bytes("a"));
    expect(keyboard.take(bytes("bcd"))).toBeUndefined();
    const stop = keyboard.take(bytes("e"));
    expect(stop).toBeInstanceOf(Promise);
    let resumed = false;
    void stop?.then(() => (resumed = true));
    await tick();
    expect(resumed).toBe(false);
    s.release();
    await tick();
    await tick();
    expect(resumed).toBe(true);
    expect(s.got.join("")).toBe("abcde");
  });
});
