/**
 * Mutating commands ignore the signals a terminal sends when it goes away
 * (SIGHUP from a dropped `ssh -tt`) or when the user presses Ctrl-C (SIGINT)
 * until their state is consistent (spec: output rules). The command finishes;
 * the renderer then exits as usual. Handlers are installed by the renderer for
 * every command not listed as interruptible, so a new mutating command is
 * covered without doing anything.
 */
export const DEFERRED_SIGNALS = ["SIGHUP", "SIGINT"] as const;

export type DeferredSignal = (typeof DEFERRED_SIGNALS)[number];

const received: DeferredSignal[] = [];

function record(signal: DeferredSignal): void {
  if (received.length < DEFERRED_SIGNALS.length && !received.includes(signal)) received.push(signal);
}

/** From now on SIGHUP and SIGINT are recorded instead of ending the process. */
export function deferTerminalSignals(): void {
  for (const signal of DEFERRED_SIGNALS) process.on(signal, record);
}

/** The deferred signals that arrived (each once), in arrival order. */
export function deferredSignals(): readonly DeferredSignal[] {
  return received;
}
