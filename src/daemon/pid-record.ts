/**
 * A pidfile's content, parsed: pure, and free of the lock and process code of
 * pidfile.ts, so a command that only reads a record (`version`) loads no more.
 */
export type PidRecord = { pid: number; processStartTime: string };

export type PidFileContent =
  | { kind: "missing" }
  | { kind: "empty" }
  | { kind: "record"; record: PidRecord }
  | { kind: "corrupt"; text: string };

export function parsePidFile(text: string | undefined): PidFileContent {
  if (text === undefined) return { kind: "missing" };
  if (text.trim() === "") return { kind: "empty" };
  try {
    const value = JSON.parse(text) as Partial<PidRecord> | null;
    if (
      value &&
      typeof value === "object" &&
      Number.isInteger(value.pid) &&
      (value.pid as number) > 1 &&
      typeof value.processStartTime === "string" &&
      value.processStartTime !== ""
    ) {
      return { kind: "record", record: { pid: value.pid as number, processStartTime: value.processStartTime } };
    }
  } catch {
    // fall through: not JSON
  }
  return { kind: "corrupt", text };
}
