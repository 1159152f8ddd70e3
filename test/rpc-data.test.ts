// The bulk-data fast path of src/rpc-data.ts as tables: parseRpcText must give
// exactly what JSON.parse gives (or throw where it throws) for every frame,
// and take the fast path where it is meant to; the built texts must parse to
// the object JSON.stringify would have written.
import { describe, expect, test } from "bun:test";
import {
  dataNotificationText,
  dataRequestText,
  FAST_PARSE_MIN_CHARS,
  FAST_PARSE_REST_MAX_CHARS,
  parseDataFrame,
  parseRpcText,
  reusableBase64Decoder,
} from "../src/rpc-data.ts";

/** Base64 long enough for the fast path on its own (a frame of at least FAST_PARSE_MIN_CHARS). */
const BIG = Buffer.alloc(FAST_PARSE_MIN_CHARS, 0xa7).toString("base64");
const HEAD = '{"jsonrpc":"2.0","id":7,"method":"tunnel/write","params":';
const frame = (params: string) => `${HEAD}${params}}`;

type Outcome = { value: unknown; text: string } | { threw: true };
function outcome(parse: (text: string) => unknown, text: string): Outcome {
  try {
    const value = parse(text);
    // JSON.stringify shows key order and own __proto__ keys, which toEqual does not.
    return { value, text: JSON.stringify(value) };
  } catch {
    return { threw: true };
  }
}

type Case = { name: string; text: string; fast: boolean };
const cases: Case[] = [
  { name: "request, numeric id", text: frame(`{"tunnelId":"t1","data":"${BIG}"}`), fast: true },
  { name: "string id", text: `{"jsonrpc":"2.0","id":"a\\"b","method":"tunnel/write","params":{"tunnelId":"t1","data":"${BIG}"}}`, fast: true },
  { name: "null id", text: `{"jsonrpc":"2.0","id":null,"method":"process/write","params":{"processId":"p1","data":"${BIG}"}}`, fast: true },
  { name: "fractional and negative id", text: `{"jsonrpc":"2.0","id":-1.5e3,"method":"tunnel/write","params":{"tunnelId":"t1","data":"${BIG}"}}`, fast: true },
  { name: "object id (invalid JSON-RPC, still the same parse)", text: `{"jsonrpc":"2.0","id":{"x":[1]},"method":"tunnel/write","params":{"data":"${BIG}"}}`, fast: true },
  { name: "notification", text: `{"jsonrpc":"2.0","method":"tunnel/data","params":{"tunnelId":"t1","data":"${BIG}"}}`, fast: true },
  { name: "data first, other key orders", text: `{"params":{"data":"${BIG}","tunnelId":"t1"},"method":"tunnel/write","id":3,"jsonrpc":"2.0"}`, fast: true },
  { name: "whitespace around other tokens", text: `{ "jsonrpc" : "2.0" ,\n "id" : 1 , "method":"tunnel/write", "params" : { "tunnelId" : "t1" ,"data":"${BIG}" } }\n`, fast: true },
  { name: "whitespace inside the data member", text: frame(`{"tunnelId":"t1","data" : "${BIG}"}`), fast: false },
  { name: "escaped backslash just before the data key", text: frame(`{"tunnelId":"t\\\\","data":"${BIG}"}`), fast: true },
  { name: "__proto__ key kept as an own key", text: frame(`{"__proto__":{"x":1},"data":"${BIG}"}`), fast: true },
  { name: "non-ASCII and a lone surrogate in data", text: frame(`{"data":"é€\ud800${BIG}"}`), fast: true },
  { name: "invalid base64 is still a JSON string (the params checker rejects it)", text: frame(`{"data":"!!@@${BIG}"}`), fast: true },
  { name: "nested data key first, small", text: frame(`{"x":{"data":"AAAA"},"data":"${BIG}"}`), fast: false },
  { name: "nested data key holds the big string", text: frame(`{"x":{"data":"${BIG}"},"data":"AAAA"}`), fast: false },
  { name: "data at the top level", text: `{"jsonrpc":"2.0","data":"${BIG}","method":"tunnel/write","params":{}}`, fast: false },
  { name: "params an array", text: `{"jsonrpc":"2.0","method":"tunnel/write","params":[{"data":"${BIG}"}]}`, fast: false },
  { name: "key containing \\\"data", text: frame(`{"k\\"data":"${BIG}"}`), fast: false },
  { name: "key containing \\\"data beside a data equal to a stand-in", text: frame(`{"k\\"data":"${BIG}","data":"berth:data:1"}`), fast: false },
  { name: "duplicate data keys: the last wins", text: frame(`{"data":"${BIG}","data":"AAAA"}`), fast: false },
  { name: "duplicate data keys, the last equal to the first stand-in", text: frame(`{"data":"${BIG}","data":"berth:data:1"}`), fast: false },
  { name: "duplicate data keys, the last equal to the second stand-in", text: frame(`{"data":"${BIG}","data":"berth:data:2"}`), fast: false },
  { name: "duplicate params: the last wins", text: `{"jsonrpc":"2.0","method":"m","params":{"data":"${BIG}"},"params":{"data":"x"}}`, fast: false },
  { name: "data with an escape", text: frame(`{"data":"${BIG}\\/"}`), fast: false },
  { name: "data with an escaped quote", text: frame(`{"data":"${BIG}\\"x"}`), fast: false },
  { name: "data with a raw newline (invalid JSON)", text: frame(`{"data":"${BIG}\nAA"}`), fast: false },
  { name: "data with a raw NUL (invalid JSON)", text: frame(`{"data":"${BIG}\u0000"}`), fast: false },
  { name: "data not a string", text: frame(`{"data":[${"1,".repeat(FAST_PARSE_MIN_CHARS)}1]}`), fast: false },
  { name: "unterminated data", text: `${HEAD}{"data":"${BIG}`, fast: false },
  { name: "missing closing brace", text: frame(`{"data":"${BIG}"`).slice(0, -1), fast: false },
  { name: "trailing garbage", text: `${frame(`{"data":"${BIG}"}`)}x`, fast: false },
  { name: "two messages in one frame", text: `${frame(`{"data":"${BIG}"}`)}{}`, fast: false },
  { name: "a top-level array", text: `[${frame(`{"data":"${BIG}"}`)}]`, fast: false },
  { name: "key inside another string", text: frame(`{"note":"\\"data\\":\\"x","data":"${BIG}"}`), fast: true },
  { name: "rest too long", text: frame(`{"tunnelId":"${"t".repeat(FAST_PARSE_REST_MAX_CHARS)}","data":"${BIG}"}`), fast: false },
  { name: "short frame", text: frame(`{"tunnelId":"t1","data":"AAAA"}`), fast: false },
  { name: "empty data in a long frame", text: frame(`{"pad":[${"0,".repeat(FAST_PARSE_MIN_CHARS / 2)}0],"data":""}`), fast: false },
];

describe("parseRpcText gives exactly what JSON.parse gives", () => {
  for (const { name, text, fast } of cases) {
    test(name, () => {
      expect(outcome(parseRpcText, text)).toEqual(outcome(JSON.parse, text));
      expect(parseDataFrame(text) !== undefined).toBe(fast);
    });
  }

  test("random damage to real frames never makes the two differ", () => {
    // A seeded generator, so a failure can be replayed.
    let seed = 12345;
    const random = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    const pieces = ['"', "\\", ":", ",", "{", "}", "[", "]", " ", "\n", "data", '"data":"', "berth:data:1", "berth:data:2", "é", "0", "null"];
    const bases = [cases[0]!.text, cases[5]!.text, cases[6]!.text, cases[7]!.text];
    let fastTaken = 0;
    for (let i = 0; i < 3_000; i++) {
      let text = bases[random(bases.length)]!;
      for (let edits = 1 + random(3); edits > 0; edits--) {
        // Edits land in the small part around the data or at its edges, where they matter.
        const at = random(2) === 0 ? random(120) : text.length - random(120);
        const piece = pieces[random(pieces.length)]!;
        text = random(3) === 0 ? text.slice(0, at) + text.slice(at + 1 + random(4)) : text.slice(0, at) + piece + text.slice(at);
      }
      expect(outcome(parseRpcText, text)).toEqual(outcome(JSON.parse, text));
      if (parseDataFrame(text)) fastTaken++;
    }
    // The damage must leave some frames on the fast path, or this compares the slow path with itself.
    expect(fastTaken).toBeGreaterThan(300);
  });
});

describe("texts built around the base64", () => {
  const paramsCases: Array<Record<string, unknown>> = [
    {},
    { tunnelId: "t1" },
    { processId: 'p"1\\', stream: "stdout", offset: 2 ** 40, truncated: true },
    { tunnelId: "é\u2028\u0000" },
  ];
  for (const params of paramsCases) {
    test(`notification with ${JSON.stringify(params)}`, () => {
      const text = dataNotificationText("tunnel/data", params, BIG);
      expect(JSON.parse(text)).toEqual({ jsonrpc: "2.0", method: "tunnel/data", params: { ...params, data: BIG } });
      expect(parseDataFrame(text)).toEqual(JSON.parse(text)); // the client's fast path reads what the server writes
    });
    for (const id of [0, 42, "id-\"x\"", ""]) {
      test(`request ${JSON.stringify(id)} with ${JSON.stringify(params)}`, () => {
        const text = dataRequestText(id, "tunnel/write", params, "AAAA");
        expect(JSON.parse(text)).toEqual({ jsonrpc: "2.0", id, method: "tunnel/write", params: { ...params, data: "AAAA" } });
      });
    }
  }
});

test("reusableBase64Decoder gives Buffer.from's bytes, in one buffer reused by the next call", () => {
  const decode = reusableBase64Decoder();
  const inputs = [BIG, "", "Zm9v", "Zm8", "Zg==", "Zm9!v", "ab-_", "Zm9v\nYg==", Buffer.alloc(700 * 1024, 9).toString("base64"), "QQ"];
  let previous: Uint8Array | undefined;
  for (const text of inputs) {
    const bytes = decode(text);
    expect(Buffer.from(bytes).equals(Buffer.from(text, "base64"))).toBe(true);
    if (previous && text.length <= BIG.length) expect(bytes.buffer).toBe(previous.buffer); // no new allocation below the largest size seen
    previous = bytes;
  }
});
