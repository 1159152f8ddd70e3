// Table-driven unit tests of the app-server's JSON-RPC handling (one text frame
// in, at most one reply out) and of the remote-control helpers.
import { describe, expect, test } from "bun:test";
import { BerthError } from "../src/errors.ts";
import {
  handleRpcText,
  RPC_INVALID_PARAMS,
  RPC_INVALID_REQUEST,
  RPC_METHOD_NOT_FOUND,
  RPC_NOT_INITIALIZED,
  RPC_PARSE_ERROR,
  type InitializeResult,
  type Session,
} from "../src/server/protocol.ts";
import { bearerMatches, parseListen } from "../src/server/token.ts";

const IDENTITY: InitializeResult = {
  userAgent: "berth/9.9.9 (Linux 6.0.0; x64)",
  serverInfo: { name: "berth", version: "9.9.9" },
  pid: 4242,
  instanceId: "00000000-0000-4000-8000-000000000000",
  berthHome: "/home/u/.berth",
  startedAt: "2026-01-01T00:00:00.000Z",
  remoteControl: { enabled: false },
};
const CLIENT = { name: "desktop", version: "1.2.3" };

type SessionKind = "fresh" | "initializing" | "ready";
const sessions: Record<SessionKind, () => Session> = {
  fresh: () => ({ initialized: false }),
  /** initialize answered, `initialized` not yet sent */
  initializing: () => ({ initialized: false, clientInfo: { ...CLIENT } }),
  ready: () => ({ initialized: true, clientInfo: { ...CLIENT } }),
};

const rpc = (message: Record<string, unknown>) => JSON.stringify({ jsonrpc: "2.0", ...message });
const error = (id: unknown, code: number) => ({ jsonrpc: "2.0", id, error: { code, message: expect.any(String) } });
const result = (id: unknown) => ({ jsonrpc: "2.0", id, result: IDENTITY });

type Case = {
  name: string;
  session: SessionKind;
  input: string;
  /** The reply, or undefined for none. */
  expected: unknown;
  /** The session afterwards (default: unchanged). */
  after?: Session;
};

const cases: Case[] = [
  // -32700: not JSON, in any session state; the id is unknowable, so null.
  ...["", " ", "{", "{not json}", "undefined", "NaN", "{'a':1}", rpc({ id: 1, method: "x" }).slice(0, -1), '{"a":1} {"b":2}'].flatMap(
    (input): Case[] => [
      { name: `parse error ${JSON.stringify(input)} (fresh)`, session: "fresh", input, expected: error(null, RPC_PARSE_ERROR) },
      { name: `parse error ${JSON.stringify(input)} (ready)`, session: "ready", input, expected: error(null, RPC_PARSE_ERROR) },
    ],
  ),

  // -32600: JSON, but not a JSON-RPC 2.0 request; the id is echoed only when it is a valid id.
  ...["null", "42", '"initialize"', "true", "[]", `[${rpc({ id: 1, method: "initialize", params: { clientInfo: CLIENT } })}]`].map(
    (input): Case => ({ name: `not an object: ${input.slice(0, 30)}`, session: "ready", input, expected: error(null, RPC_INVALID_REQUEST) }),
  ),
  { name: "jsonrpc 1.0", session: "ready", input: '{"jsonrpc":"1.0","id":1,"method":"x"}', expected: error(1, RPC_INVALID_REQUEST) },
  { name: "jsonrpc as a number", session: "ready", input: '{"jsonrpc":2.0,"id":1,"method":"x"}', expected: error(1, RPC_INVALID_REQUEST) },
  { name: "jsonrpc missing", session: "ready", input: '{"id":"a","method":"x"}', expected: error("a", RPC_INVALID_REQUEST) },
  { name: "method missing", session: "ready", input: rpc({ id: 2 }), expected: error(2, RPC_INVALID_REQUEST) },
  { name: "method a number", session: "ready", input: rpc({ id: 3, method: 42 }), expected: error(3, RPC_INVALID_REQUEST) },
  { name: "method null", session: "ready", input: rpc({ id: 4, method: null }), expected: error(4, RPC_INVALID_REQUEST) },
  { name: "notification with bad method", session: "ready", input: rpc({ method: 5 }), expected: error(null, RPC_INVALID_REQUEST) },
  { name: "id an object", session: "ready", input: rpc({ id: {}, method: "x" }), expected: error(null, RPC_INVALID_REQUEST) },
  { name: "id an array", session: "ready", input: rpc({ id: [1], method: "x" }), expected: error(null, RPC_INVALID_REQUEST) },
  { name: "id a boolean", session: "ready", input: rpc({ id: true, method: "x" }), expected: error(null, RPC_INVALID_REQUEST) },
  { name: "id not finite (1e400)", session: "ready", input: '{"jsonrpc":"2.0","id":1e400,"method":"x"}', expected: error(null, RPC_INVALID_REQUEST) },
  { name: "bad id and bad shape", session: "ready", input: '{"jsonrpc":"1.0","id":{},"method":"x"}', expected: error(null, RPC_INVALID_REQUEST) },
  { name: "invalid before initialize too", session: "fresh", input: "[]", expected: error(null, RPC_INVALID_REQUEST) },

  // -32002: any request but initialize before initialize.
  { name: "request before initialize", session: "fresh", input: rpc({ id: 1, method: "status" }), expected: error(1, RPC_NOT_INITIALIZED) },
  { name: "unknown method before initialize", session: "fresh", input: rpc({ id: "s", method: "nope" }), expected: error("s", RPC_NOT_INITIALIZED) },
  { name: "initialized as a request before initialize", session: "fresh", input: rpc({ id: 2, method: "initialized" }), expected: error(2, RPC_NOT_INITIALIZED) },

  // -32601: unknown methods once initialized (also between initialize and initialized).
  { name: "unknown method", session: "ready", input: rpc({ id: 7, method: "no/such" }), expected: error(7, RPC_METHOD_NOT_FOUND) },
  { name: "unknown method before initialized notification", session: "initializing", input: rpc({ id: 8, method: "x" }), expected: error(8, RPC_METHOD_NOT_FOUND) },
  { name: "method names are case-sensitive", session: "ready", input: rpc({ id: 9, method: "Initialize", params: { clientInfo: CLIENT } }), expected: error(9, RPC_METHOD_NOT_FOUND) },

  // Valid ids are echoed as given.
  ...(["abc", "", 0, -1, 1.5, 2 ** 53, null] as const).map(
    (id): Case => ({ name: `id ${JSON.stringify(id)} echoed`, session: "ready", input: rpc({ id, method: "x" }), expected: error(id, RPC_METHOD_NOT_FOUND) }),
  ),

  // initialize
  {
    name: "initialize",
    session: "fresh",
    input: rpc({ id: 1, method: "initialize", params: { clientInfo: CLIENT } }),
    expected: result(1),
    after: { initialized: false, clientInfo: CLIENT },
  },
  {
    name: "initialize keeps a title and drops unknown fields",
    session: "fresh",
    input: rpc({ id: "i", method: "initialize", params: { clientInfo: { ...CLIENT, title: "Desk", extra: 1 }, capabilities: {} } }),
    expected: result("i"),
    after: { initialized: false, clientInfo: { ...CLIENT, title: "Desk" } },
  },
  {
    name: "initialize ignores a non-string title",
    session: "fresh",
    input: rpc({ id: 2, method: "initialize", params: { clientInfo: { ...CLIENT, title: 5 } } }),
    expected: result(2),
    after: { initialized: false, clientInfo: CLIENT },
  },
  { name: "initialize with a null id", session: "fresh", input: rpc({ id: null, method: "initialize", params: { clientInfo: CLIENT } }), expected: result(null), after: { initialized: false, clientInfo: CLIENT } },
  {
    name: "initialize again replaces clientInfo",
    session: "ready",
    input: rpc({ id: 3, method: "initialize", params: { clientInfo: { name: "other", version: "2" } } }),
    expected: result(3),
    after: { initialized: true, clientInfo: { name: "other", version: "2" } },
  },
  // -32602: initialize without a usable clientInfo; the session is left as it was.
  ...([
    ["no params", undefined],
    ["params null", null],
    ["params an array", [CLIENT]],
    ["params a string", "clientInfo"],
    ["no clientInfo", {}],
    ["clientInfo null", { clientInfo: null }],
    ["clientInfo an array", { clientInfo: [CLIENT] }],
    ["clientInfo without name", { clientInfo: { version: "1" } }],
    ["clientInfo without version", { clientInfo: { name: "x" } }],
    ["clientInfo version a number", { clientInfo: { name: "x", version: 1 } }],
    ["clientInfo name null", { clientInfo: { name: null, version: "1" } }],
  ] as const).map(
    ([label, params]): Case => ({
      name: `initialize with ${label}`,
      session: "fresh",
      input: rpc({ id: 5, method: "initialize", ...(params === undefined ? {} : { params }) }),
      expected: error(5, RPC_INVALID_PARAMS),
    }),
  ),
  { name: "bad initialize after a good one keeps the session", session: "ready", input: rpc({ id: 6, method: "initialize", params: {} }), expected: error(6, RPC_INVALID_PARAMS) },

  // Notifications never get a reply.
  { name: "initialized after initialize", session: "initializing", input: rpc({ method: "initialized" }), expected: undefined, after: { initialized: true, clientInfo: CLIENT } },
  { name: "initialized before initialize is ignored", session: "fresh", input: rpc({ method: "initialized" }), expected: undefined },
  { name: "initialized twice", session: "ready", input: rpc({ method: "initialized" }), expected: undefined },
  { name: "unknown notification before initialize", session: "fresh", input: rpc({ method: "status" }), expected: undefined },
  { name: "unknown notification", session: "ready", input: rpc({ method: "no/such", params: [1] }), expected: undefined },
  { name: "initialize as a notification does nothing", session: "fresh", input: rpc({ method: "initialize", params: { clientInfo: CLIENT } }), expected: undefined },
];

describe("handleRpcText", () => {
  for (const { name, session: kind, input, expected, after } of cases) {
    test(name, () => {
      const session = sessions[kind]();
      let identityCalls = 0;
      const reply = handleRpcText(input, session, () => {
        identityCalls++;
        return IDENTITY;
      });
      expect(reply).toEqual(expected as any);
      if (reply) {
        // Every reply is a JSON-RPC 2.0 response with exactly one of result/error.
        expect(Object.keys(reply).sort()).toEqual(["error" in reply ? "error" : "result", "id", "jsonrpc"].sort());
        if ("error" in reply) expect(reply.error.message.length).toBeGreaterThan(0);
        // And it survives serialization unchanged.
        expect(JSON.parse(JSON.stringify(reply))).toEqual(reply);
      }
      // The identity is read only for a successful initialize.
      expect(identityCalls).toBe(reply && "result" in reply ? 1 : 0);
      expect(session).toEqual(after ?? sessions[kind]());
    });
  }

  test("a whole session: initialize, initialized, then requests", () => {
    const session: Session = { initialized: false };
    const identity = () => IDENTITY;
    const steps: { input: string; expected: unknown }[] = [
      { input: rpc({ id: 1, method: "status" }), expected: error(1, RPC_NOT_INITIALIZED) },
      { input: rpc({ method: "initialized" }), expected: undefined },
      { input: rpc({ id: 2, method: "initialize", params: { clientInfo: CLIENT } }), expected: result(2) },
      { input: rpc({ method: "initialized" }), expected: undefined },
      { input: rpc({ id: 3, method: "status" }), expected: error(3, RPC_METHOD_NOT_FOUND) },
      { input: "oops", expected: error(null, RPC_PARSE_ERROR) },
      { input: rpc({ id: 4, method: "initialize", params: { clientInfo: CLIENT } }), expected: result(4) },
    ];
    for (const { input, expected } of steps) expect(handleRpcText(input, session, identity)).toEqual(expected as any);
    expect(session).toEqual({ initialized: true, clientInfo: CLIENT });
  });

  test("the identity is read at reply time (a late-bound URL shows up)", () => {
    let url: string | undefined;
    const identity = (): InitializeResult => ({ ...IDENTITY, remoteControl: { enabled: true, ...(url ? { url } : {}) } });
    const init = rpc({ id: 1, method: "initialize", params: { clientInfo: CLIENT } });
    expect((handleRpcText(init, { initialized: false }, identity) as any).result.remoteControl).toEqual({ enabled: true });
    url = "ws://127.0.0.1:4000/";
    expect((handleRpcText(init, { initialized: false }, identity) as any).result.remoteControl).toEqual({ enabled: true, url });
  });

  test("error codes are the JSON-RPC / LSP ones", () => {
    expect([RPC_PARSE_ERROR, RPC_INVALID_REQUEST, RPC_METHOD_NOT_FOUND, RPC_INVALID_PARAMS, RPC_NOT_INITIALIZED]).toEqual([
      -32700, -32600, -32601, -32602, -32002,
    ]);
  });
});

describe("parseListen", () => {
  const valid: { input: string; expected: { hostname: string; port: number } }[] = [
    { input: "127.0.0.1:0", expected: { hostname: "127.0.0.1", port: 0 } },
    { input: "0.0.0.0:8080", expected: { hostname: "0.0.0.0", port: 8080 } },
    { input: "localhost:65535", expected: { hostname: "localhost", port: 65535 } },
    { input: "my-host.example:1", expected: { hostname: "my-host.example", port: 1 } },
    { input: "[::1]:8080", expected: { hostname: "::1", port: 8080 } },
    { input: "[::]:0", expected: { hostname: "::", port: 0 } },
    { input: "[fe80::1%eth0]:9", expected: { hostname: "fe80::1%eth0", port: 9 } },
    { input: "  127.0.0.1:4000\n", expected: { hostname: "127.0.0.1", port: 4000 } },
    { input: "127.0.0.1:08080", expected: { hostname: "127.0.0.1", port: 8080 } },
  ];
  for (const { input, expected } of valid) {
    test(`accepts ${JSON.stringify(input)}`, () => {
      expect(parseListen(input)).toEqual(expected);
    });
  }

  const invalid = [
    "",
    "127.0.0.1",
    "127.0.0.1:",
    ":8080",
    "8080",
    "127.0.0.1:65536",
    "127.0.0.1:99999",
    "127.0.0.1:123456",
    "127.0.0.1:-1",
    "127.0.0.1:http",
    "127.0.0.1:80/",
    "::1:8080",
    "[::1]",
    "[::1]8080",
    "ws://127.0.0.1:80",
    "unix:///tmp/x.sock",
  ];
  for (const input of invalid) {
    test(`rejects ${JSON.stringify(input)} with STATE_CORRUPT`, () => {
      let thrown: unknown;
      try {
        parseListen(input);
      } catch (caught) {
        thrown = caught;
      }
      expect(thrown).toBeInstanceOf(BerthError);
      expect((thrown as BerthError).code).toBe("STATE_CORRUPT");
      expect((thrown as BerthError).message).toContain(JSON.stringify(input));
    });
  }
});

describe("bearerMatches", () => {
  const TOKEN = "s3cr3t-T0ken_value";
  const cases: { header: string | null; token?: string; expected: boolean }[] = [
    { header: `Bearer ${TOKEN}`, expected: true },
    { header: `Bearer ${TOKEN}  `, expected: true },
    { header: `Bearer   ${TOKEN}`, expected: true },
    { header: `bearer ${TOKEN}`, expected: true }, // the scheme is case-insensitive (RFC 7235)
    { header: `BEARER ${TOKEN}`, expected: true },
    { header: null, expected: false },
    { header: "", expected: false },
    { header: "Bearer", expected: false },
    { header: "Bearer ", expected: false },
    { header: TOKEN, expected: false },
    { header: `Basic ${TOKEN}`, expected: false },
    { header: `Bearer${TOKEN}`, expected: false },
    { header: `Bearer ${TOKEN.toUpperCase()}`, expected: false },
    { header: `Bearer ${TOKEN}x`, expected: false },
    { header: `Bearer ${TOKEN.slice(0, -1)}`, expected: false },
    { header: `Bearer ${TOKEN} ${TOKEN}`, expected: false },
    { header: `Bearer x${TOKEN}`, expected: false },
    // An empty token never matches, not even an empty credential.
    { header: "Bearer ", token: "", expected: false },
    { header: "Bearer x", token: "", expected: false },
  ];
  for (const { header, token = TOKEN, expected } of cases) {
    test(`${JSON.stringify(header)} against ${token === TOKEN ? "the token" : JSON.stringify(token)} -> ${expected}`, () => {
      expect(bearerMatches(header, token)).toBe(expected);
    });
  }
});
