/**
 * What can go wrong on a connection (connection.ts), as values: the server's
 * JSON-RPC errors, a connection that closed under a call, and an ssh that
 * ended before `berth connect` said it was connected.
 */
import { BerthError } from "../errors.ts";
import { lastLine, sshFailed, SSH_CONNECTION_FAILED } from "./ssh.ts";

export type Closed = { code: number | null; signal: string | null; stderr: string };

/** A JSON-RPC error answered by the app-server. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = "RpcError";
  }
}

/** The connection ended before a call was answered. */
export class ConnectionClosed extends Error {
  constructor(readonly closedWith: Closed) {
    super(`the connection closed (ssh exit ${closedWith.code ?? closedWith.signal})`);
    this.name = "ConnectionClosed";
  }
}

/** Error codes of the remote berth that are passed on as they are (the others become SSH_FAILED). */
export const KNOWN_CODES = new Set(["NOT_INSTALLED", "NOT_RUNNING", "NOT_MANAGED", "LOCK_TIMEOUT", "START_FAILED", "NOT_READY", "STATE_CORRUPT", "UNSAFE_STATE", "UNSUPPORTED_PLATFORM"]);

/** Pure: the error for an ssh that ended before the `connected` line. */
export function preambleFailure(host: string, closed: Closed, noise: string): BerthError {
  if (closed.code === SSH_CONNECTION_FAILED) return sshFailed(host, closed.stderr);
  if (closed.code === 127) {
    return new BerthError("NOT_INSTALLED", `berth is not installed on ${host} (${lastLine(closed.stderr) || "command not found"}); run \`berth remote ${host} bootstrap\`.`);
  }
  const said = lastLine(closed.stderr) || lastLine(noise) || "nothing";
  return new BerthError("SSH_FAILED", `\`berth connect\` on ${host} ended (exit ${closed.code ?? closed.signal}) before it was connected; it said: ${said}`);
}
