/** The stable error codes of the spec. Clients match on these; never rename one. */
export type ErrorCode =
  | "USAGE"
  | "UNSUPPORTED_PLATFORM"
  | "NOT_INSTALLED"
  | "NOT_RUNNING"
  | "NOT_MANAGED"
  | "LOCK_TIMEOUT"
  | "START_FAILED"
  | "NOT_READY"
  | "STOP_TIMEOUT"
  | "STATE_CORRUPT"
  | "UNSAFE_STATE"
  | "DOWNLOAD_FAILED"
  | "CHECKSUM_MISMATCH"
  | "SIGNATURE_INVALID"
  | "INSTALL_FAILED"
  | "UPDATE_FAILED"
  | "SSH_FAILED"
  | "INTERNAL";

/** The one error class of berth: what failed, where, and what to do next. */
export class BerthError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "BerthError";
  }
}

export function isBerthError(error: unknown, code?: ErrorCode): error is BerthError {
  return error instanceof BerthError && (code === undefined || error.code === code);
}

/** Node-style errno code of a thrown fs/spawn error, if any. */
export function errnoCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
