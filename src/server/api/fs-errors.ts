/**
 * Pure pieces of the fs/* family: how an errno becomes a JSON-RPC error, and
 * how bytes that may not be UTF-8 (names, paths, link targets) are given back.
 */
import { isUtf8 } from "node:buffer";
import { errnoCode } from "../../errors.ts";
import { API_INVALID_PARAMS, API_LIMIT, API_NOT_FOUND, API_PERMISSION_DENIED, ApiError } from "./types.ts";

/** errno → spec code. Anything not listed is the client's params being wrong for the operation (EEXIST, ENOTDIR, ELOOP…). */
const ERRNO_CODES: Record<string, number> = {
  ENOENT: API_NOT_FOUND,
  EACCES: API_PERMISSION_DENIED,
  EPERM: API_PERMISSION_DENIED,
  EROFS: API_PERMISSION_DENIED,
  ENOSPC: API_LIMIT,
  EDQUOT: API_LIMIT,
  EMFILE: API_LIMIT,
  ENFILE: API_LIMIT,
  EFBIG: API_LIMIT,
};

/** The code a filesystem errno maps to (a table, tested as one). */
export function codeForErrno(errno: string): number {
  return ERRNO_CODES[errno] ?? API_INVALID_PARAMS;
}

/** Turns a thrown fs error into an ApiError carrying `data.errno`; rethrows what is not an fs error. */
export function fsError(error: unknown, what: string, path: string): ApiError {
  if (error instanceof ApiError) return error;
  const errno = errnoCode(error);
  if (!errno) throw error;
  return new ApiError(codeForErrno(errno), `${what} ${JSON.stringify(path)} failed: ${errno}`, { errno });
}

/**
 * Bytes given back as text: `{[key]: text}` when they are UTF-8, otherwise the
 * text with replacement characters plus `[key + "Base64"]` holding the bytes.
 */
export function textField(key: string, bytes: Uint8Array): Record<string, string> {
  const text = Buffer.from(bytes).toString("utf8");
  return isUtf8(bytes) ? { [key]: text } : { [key]: text, [`${key}Base64`]: Buffer.from(bytes).toString("base64") };
}
