/**
 * Runs one routed call against the method table: params checked once, the
 * handler awaited, ApiError turned into a JSON-RPC error, anything else into
 * -32603 (logged, never fatal to the server).
 */
import { describeError } from "../../errors.ts";
import type { RpcId, RpcReply } from "../protocol.ts";
import { API_INTERNAL, ApiError, type Conn, type Method } from "./types.ts";

export async function runMethod(
  id: RpcId | undefined,
  method: string,
  entry: Method,
  rawParams: unknown,
  conn: Conn,
  onInternalError: (method: string, error: unknown) => void = () => {},
): Promise<RpcReply | undefined> {
  let result: unknown;
  try {
    result = await entry.handle(entry.params(rawParams), conn);
  } catch (error) {
    if (id === undefined) return undefined;
    if (error instanceof ApiError) {
      return { jsonrpc: "2.0", id, error: { code: error.code, message: error.message, ...(error.data ? { data: error.data } : {}) } };
    }
    onInternalError(method, error);
    return { jsonrpc: "2.0", id, error: { code: API_INTERNAL, message: `internal error in ${method}: ${describeError(error)}` } };
  }
  if (id === undefined) return undefined;
  return { jsonrpc: "2.0", id, result: result ?? {} };
}
