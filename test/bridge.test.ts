// The pure parts of `berth connect`'s bridge, as tables.
import { describe, expect, test } from "bun:test";
import { requestKey, takeLines } from "../src/server/bridge.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

describe("takeLines", () => {
  const cases: Array<{ input: string; max: number; lines: string[]; rest: string; tooLong: boolean }> = [
    { input: "", max: 10, lines: [], rest: "", tooLong: false },
    { input: "abc", max: 10, lines: [], rest: "abc", tooLong: false },
    { input: "a\nb\n", max: 10, lines: ["a", "b"], rest: "", tooLong: false },
    { input: "a\r\nb", max: 10, lines: ["a"], rest: "b", tooLong: false },
    { input: "\n\n", max: 10, lines: ["", ""], rest: "", tooLong: false },
    { input: "12345\n", max: 5, lines: ["12345"], rest: "", tooLong: false },
    { input: "123456\n", max: 5, lines: [], rest: "", tooLong: true },
    { input: "ok\n123456", max: 5, lines: ["ok"], rest: "123456", tooLong: true },
    { input: "ok\n12345", max: 5, lines: ["ok"], rest: "12345", tooLong: false },
  ];
  for (const c of cases) {
    test(JSON.stringify(c.input), () => {
      const out = takeLines(enc(c.input), c.max);
      expect({ lines: out.lines.map(dec), rest: out.tooLong ? c.rest : dec(out.rest), tooLong: out.tooLong }).toEqual({ lines: c.lines, rest: c.rest, tooLong: c.tooLong });
    });
  }
});

describe("requestKey", () => {
  const cases: Array<[string, string | undefined]> = [
    ['{"jsonrpc":"2.0","id":1,"method":"x"}', "1"],
    ['{"jsonrpc":"2.0","id":"a","method":"x"}', '"a"'],
    ['{"jsonrpc":"2.0","id":null,"method":"x"}', "null"],
    ['{"jsonrpc":"2.0","method":"initialized"}', undefined],
    ['{"jsonrpc":"2.0","id":1,"result":{}}', undefined],
    ["not json", undefined],
    ["[]", undefined],
    ["null", undefined],
  ];
  for (const [input, key] of cases) test(input, () => expect(requestKey(input)).toBe(key));
});
