// The byte ring with absolute offsets, as a table: wrap-around, truncation,
// reads from before the start, past the end, and bounded reads.
import { describe, expect, test } from "bun:test";
import { ByteRing } from "../src/server/process/ring.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (data: Uint8Array) => new TextDecoder().decode(data);

type Case = { name: string; capacity: number; writes: string[]; since?: number; max?: number; expected: { offset: number; data: string; truncated: boolean; start: number; end: number } };

const cases: Case[] = [
  { name: "empty ring", capacity: 4, writes: [], expected: { offset: 0, data: "", truncated: false, start: 0, end: 0 } },
  { name: "fits", capacity: 8, writes: ["abc", "de"], expected: { offset: 0, data: "abcde", truncated: false, start: 0, end: 5 } },
  { name: "exactly full", capacity: 5, writes: ["abcde"], expected: { offset: 0, data: "abcde", truncated: false, start: 0, end: 5 } },
  { name: "wraps around", capacity: 5, writes: ["abc", "defg"], expected: { offset: 2, data: "cdefg", truncated: false, start: 2, end: 7 } },
  { name: "wraps many times", capacity: 3, writes: ["ab", "cd", "ef", "gh", "i"], expected: { offset: 6, data: "ghi", truncated: false, start: 6, end: 9 } },
  { name: "one chunk larger than the ring keeps its tail", capacity: 4, writes: ["x", "abcdefghij"], expected: { offset: 7, data: "ghij", truncated: false, start: 7, end: 11 } },
  { name: "since inside", capacity: 8, writes: ["abcdef"], since: 2, expected: { offset: 2, data: "cdef", truncated: false, start: 0, end: 6 } },
  { name: "since at the end reads nothing", capacity: 8, writes: ["abc"], since: 3, expected: { offset: 3, data: "", truncated: false, start: 0, end: 3 } },
  { name: "since past the end reads nothing at the end", capacity: 8, writes: ["abc"], since: 99, expected: { offset: 3, data: "", truncated: false, start: 0, end: 3 } },
  { name: "since before the start is truncated", capacity: 4, writes: ["abcdefgh"], since: 1, expected: { offset: 4, data: "efgh", truncated: true, start: 4, end: 8 } },
  { name: "since exactly the start is not truncated", capacity: 4, writes: ["abcdefgh"], since: 4, expected: { offset: 4, data: "efgh", truncated: false, start: 4, end: 8 } },
  { name: "since inside after wrap", capacity: 4, writes: ["abcdef"], since: 4, expected: { offset: 4, data: "ef", truncated: false, start: 2, end: 6 } },
  { name: "bounded read", capacity: 8, writes: ["abcdefgh"], since: 1, max: 3, expected: { offset: 1, data: "bcd", truncated: false, start: 0, end: 8 } },
  { name: "bounded read across the wrap", capacity: 4, writes: ["abcdef"], since: 3, max: 2, expected: { offset: 3, data: "de", truncated: false, start: 2, end: 6 } },
];

describe("ByteRing", () => {
  for (const c of cases) {
    test(c.name, () => {
      const ring = new ByteRing(c.capacity);
      for (const write of c.writes) ring.append(bytes(write));
      const read = ring.read(c.since, c.max);
      expect({ offset: read.offset, data: text(read.data), truncated: read.truncated, start: ring.start, end: ring.end }).toEqual(c.expected);
    });
  }

  for (const c of cases) {
    test(`view: ${c.name}`, () => {
      const ring = new ByteRing(c.capacity);
      for (const write of c.writes) ring.append(bytes(write));
      const view = ring.view(c.since, c.max);
      expect({ offset: view.offset, data: text(view.data), truncated: view.truncated, start: ring.start, end: ring.end }).toEqual(c.expected);
    });
  }

  test("a view of contiguous bytes is not a copy; one across the wrap is", () => {
    const ring = new ByteRing(4);
    ring.append(bytes("abc"));
    const view = ring.view();
    ring.append(bytes("xy")); // overwrites position 0 ("a") after the wrap
    expect(text(view.data)).toBe("ybc");
    expect(text(ring.view(3).data)).toBe("xy");
  });

  test("a read is a copy: later writes do not change it", () => {
    const ring = new ByteRing(4);
    ring.append(bytes("abcd"));
    const read = ring.read();
    ring.append(bytes("wxyz"));
    expect(text(read.data)).toBe("abcd");
  });

  test("reading in chunks from any offset gives every kept byte once", () => {
    const ring = new ByteRing(7);
    let all = "";
    for (let i = 0; i < 40; i++) {
      const chunk = String.fromCharCode(97 + (i % 26)).repeat((i % 5) + 1);
      all += chunk;
      ring.append(bytes(chunk));
    }
    let from = ring.start;
    let got = "";
    while (from < ring.end) {
      const read = ring.read(from, 3);
      got += text(read.data);
      from = read.offset + read.data.length;
    }
    expect(got).toBe(all.slice(-7));
  });

  test("capacity must be positive", () => {
    expect(() => new ByteRing(0)).toThrow(RangeError);
  });
});
