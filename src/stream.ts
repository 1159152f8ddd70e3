/**
 * The one hook for streaming commands (`logs --follow`): a command's result
 * may carry a FOLLOW function; src/cli.ts prints the result's JSON line first,
 * then hands FOLLOW an `emit` that prints one JSON line per object. Symbol
 * keys never reach JSON.stringify.
 */
export const FOLLOW = Symbol("berth.follow");

export type Follow = (emit: (value: object) => Promise<void>) => Promise<void>;

export function followOf(result: unknown): Follow | undefined {
  const follow = result && typeof result === "object" ? (result as { [FOLLOW]?: unknown })[FOLLOW] : undefined;
  return typeof follow === "function" ? (follow as Follow) : undefined;
}
