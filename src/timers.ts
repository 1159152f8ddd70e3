/**
 * setTimeout takes at most 2^31−1 ms (~24.8 days): Bun, like Node, turns a
 * longer delay into 1 ms (with a TimeoutOverflowWarning). A setting may ask
 * for longer (keep exited processes a month, a quiet period of weeks), so
 * every timer fed from a setting goes through here.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Calls `fn` once after `ms` (any length), in steps setTimeout can take; `unref`ed; `cancel` stops it. */
export function longTimeout(fn: () => void, ms: number): { cancel(): void } {
  let timer: ReturnType<typeof setTimeout>;
  const arm = (left: number) => {
    const step = Math.min(Math.max(0, left), MAX_TIMER_MS);
    timer = setTimeout(() => (left > step ? arm(left - step) : fn()), step);
    timer.unref?.();
  };
  arm(ms);
  return { cancel: () => clearTimeout(timer) };
}
