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

/** Storage failures a user can fix, with what to do for each. */
const STORAGE_ERRORS: Record<string, string> = {
  EROFS: "the file system is read-only; remount it read-write or choose another BERTH_HOME",
  // ENOSPC is also what a file system out of inodes says (`df -i`), while `df -h` still shows space.
  ENOSPC: "the disk is full (no space, or no inodes: see `df -h` and `df -i`); free some space and retry",
  EDQUOT: "your disk quota is exhausted; free some space and retry",
  // A file-size limit inherited from the parent (`ulimit -f`): Bun ignores SIGXFSZ, so the write fails instead.
  EFBIG: "a file-size limit forbids the write (see `ulimit -f`); raise it and retry",
  EISDIR: "a folder is where a file belongs; move it away and retry",
  ENOTDIR: "a file is where a folder belongs; move it away and retry",
};

/**
 * A storage failure (read-only disk, full disk, a folder where a file belongs)
 * as a documented code instead of INTERNAL: UNSAFE_STATE, because berth's
 * state cannot be kept safely there. Undefined for anything else.
 */
export function storageError(error: unknown): BerthError | undefined {
  const code = errnoCode(error);
  const advice = code ? STORAGE_ERRORS[code] : undefined;
  if (!advice) return undefined;
  const path = (error as { path?: unknown }).path;
  return new BerthError("UNSAFE_STATE", `cannot use ${typeof path === "string" ? path : "a state file"} (${code}): ${advice}.`, { cause: error });
}
