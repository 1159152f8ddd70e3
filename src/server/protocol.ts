/**
 * The app-server's JSON-RPC 2.0 handling, free of sockets so it can be tested
 * as a table: one text frame in, at most one reply out.
 */

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

type RpcId = string | number | null;
export type RpcReply =
  | { jsonrpc: "2.0"; id: RpcId; result: unknown }
  | { jsonrpc: "2.0"; id: RpcId; error: { code: number; message: string } };

function failure(id: RpcId, code: number, message: string): RpcReply {
  return { jsonrpc: "2.0", id, error: { code, message } };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Handles one message. `identity` is read lazily so the URL of a late-bound listener is current. */
export function handleRpcText(text: string, session: Session, identity: () => InitializeResult): RpcReply | undefined {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return failure(null, RPC_PARSE_ERROR, "parse error: each frame must be one JSON-RPC message");
  }
  if (!isRecord(message) || message.jsonrpc !== "2.0" || typeof message.method !== "string") {
    const id = isRecord(message) && isValidId(message.id) ? (message.id as RpcId) : null;
    return failure(id, RPC_INVALID_REQUEST, "invalid request: expected a JSON-RPC 2.0 object with a method");
  }
  const isNotification = !("id" in message);
  if (!isNotification && !isValidId(message.id)) return failure(null, RPC_INVALID_REQUEST, "invalid request: bad id");
  const id = (message.id ?? null) as RpcId;
  const method = message.method;

  if (isNotification) {
    // Notifications never get replies, errors included (JSON-RPC 2.0 §4.1).
    if (method === "initialized" && session.clientInfo) session.initialized = true;
    return undefined;
  }
  if (method === "initialize") {
    const clientInfo = isRecord(message.params) ? message.params.clientInfo : undefined;
    if (!isRecord(clientInfo) || typeof clientInfo.name !== "string" || typeof clientInfo.version !== "string") {
      return failure(id, RPC_INVALID_PARAMS, "initialize needs params.clientInfo with name and version");
    }
    session.clientInfo = {
      name: clientInfo.name,
      version: clientInfo.version,
      ...(typeof clientInfo.title === "string" ? { title: clientInfo.title } : {}),
    };
    return { jsonrpc: "2.0", id, result: identity() };
  }
  if (!session.clientInfo) return failure(id, RPC_NOT_INITIALIZED, "not initialized: send initialize first");
  return failure(id, RPC_METHOD_NOT_FOUND, `method not found: ${method}`);
}

function isValidId(id: unknown): boolean {
  return typeof id === "string" || (typeof id === "number" && Number.isFinite(id)) || id === null;
}
