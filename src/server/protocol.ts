/**
 * The app-server's JSON-RPC 2.0 handling, free of sockets so it can be tested
 * as a table: one text frame in, at most one reply out.
 */
import { parseRpcText } from "../rpc-data.ts";
import type { Method, MethodTable } from "./api/types.ts";

export const RPC_PARSE_ERROR = -32700;
export const RPC_INVALID_REQUEST = -32600;
export const RPC_METHOD_NOT_FOUND = -32601;
export const RPC_INVALID_PARAMS = -32602;
export const RPC_NOT_INITIALIZED = -32002;

export type InitializeResult = {
  userAgent: string;
  serverInfo: { name: "berth"; version: string };
  pid: number;
  instanceId: string;
  berthHome: string;
  startedAt: string;
  remoteControl: { enabled: boolean; url?: string };
};

export type Session = { initialized: boolean; clientInfo?: { name: string; version: string; title?: string } };

export type RpcId = string | number | null;
export type RpcReply =
  | { jsonrpc: "2.0"; id: RpcId; result: unknown }
  | { jsonrpc: "2.0"; id: RpcId; error: { code: number; message: string; data?: unknown } };

/** What one frame asks of the server: a reply now, nothing, or a call into the method table. */
export type Routed =
  | { kind: "reply"; reply: RpcReply }
  | { kind: "none" }
  | { kind: "call"; id: RpcId | undefined; method: string; entry: Method; params: unknown };

function failure(id: RpcId, code: number, message: string): RpcReply {
  return { jsonrpc: "2.0", id, error: { code, message } };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Handles one message that needs no method table (initialize and the protocol's errors). */
export function handleRpcText(text: string, session: Session, identity: () => InitializeResult): RpcReply | undefined {
  const routed = routeRpcText(text, session, identity, {});
  return routed.kind === "reply" ? routed.reply : undefined;
}

/**
 * Classifies one frame. `identity` is read lazily so the URL of a late-bound
 * listener is current. API methods (after initialize) come back as a call
 * for src/server/api/dispatch.ts; notifications never get replies.
 */
export function routeRpcText(text: string, session: Session, identity: () => InitializeResult, methods: MethodTable): Routed {
  const reply = (r: RpcReply | undefined): Routed => (r ? { kind: "reply", reply: r } : { kind: "none" });
  let message: unknown;
  try {
    message = parseRpcText(text); // what JSON.parse returns, without running the parser over a big base64 `data`
  } catch {
    return reply(failure(null, RPC_PARSE_ERROR, "parse error: each frame must be one JSON-RPC message"));
  }
  if (!isRecord(message) || message.jsonrpc !== "2.0" || typeof message.method !== "string") {
    const id = isRecord(message) && isValidId(message.id) ? (message.id as RpcId) : null;
    return reply(failure(id, RPC_INVALID_REQUEST, "invalid request: expected a JSON-RPC 2.0 object with a method"));
  }
  const isNotification = !("id" in message);
  if (!isNotification && !isValidId(message.id)) return reply(failure(null, RPC_INVALID_REQUEST, "invalid request: bad id"));
  const id = (message.id ?? null) as RpcId;
  const method = message.method;

  if (isNotification) {
    // Notifications never get replies, errors included (JSON-RPC 2.0 §4.1).
    if (method === "initialized" && session.clientInfo) {
      session.initialized = true;
      return { kind: "none" };
    }
    const entry = session.clientInfo && Object.hasOwn(methods, method) ? methods[method] : undefined;
    return entry ? { kind: "call", id: undefined, method, entry, params: message.params } : { kind: "none" };
  }
  if (method === "initialize") {
    const clientInfo = isRecord(message.params) ? message.params.clientInfo : undefined;
    if (!isRecord(clientInfo) || typeof clientInfo.name !== "string" || typeof clientInfo.version !== "string") {
      return reply(failure(id, RPC_INVALID_PARAMS, "initialize needs params.clientInfo with name and version"));
    }
    session.clientInfo = {
      name: clientInfo.name,
      version: clientInfo.version,
      ...(typeof clientInfo.title === "string" ? { title: clientInfo.title } : {}),
    };
    return reply({ jsonrpc: "2.0", id, result: identity() });
  }
  if (!session.clientInfo) return reply(failure(id, RPC_NOT_INITIALIZED, "not initialized: send initialize first"));
  const entry = Object.hasOwn(methods, method) ? methods[method] : undefined;
  if (entry) return { kind: "call", id, method, entry, params: message.params };
  return reply(failure(id, RPC_METHOD_NOT_FOUND, `method not found: ${method}`));
}

function isValidId(id: unknown): boolean {
  return typeof id === "string" || (typeof id === "number" && Number.isFinite(id)) || id === null;
}
