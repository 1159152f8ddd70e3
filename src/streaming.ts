/**
 * A command whose output goes on after its first JSON line (`connect`):
 * cli.ts prints `firstLine` as the command's one JSON object, then awaits
 * `run`, which owns stdout from then on and returns the exit code.
 */
export type StreamingResult = { streaming: true; firstLine: object; run(): Promise<number> };

export function isStreamingResult(value: unknown): value is StreamingResult {
  const v = value as Partial<StreamingResult> | null;
  return typeof v === "object" && v !== null && v.streaming === true && typeof v.run === "function" && typeof v.firstLine === "object";
}
