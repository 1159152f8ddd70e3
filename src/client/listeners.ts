/**
 * The notification listeners of a connection, by method (`"*"`: all). A
 * listener that throws, or returns a promise that rejects, is its caller's
 * bug: the error goes to the `onError` handlers (without one, a single line
 * on stderr for the connection's life) and never reaches the connection's
 * reading loop. Ending the connection for it would make a follower reconnect
 * into the same throw, again and again.
 */

type Listener = (params: any) => void;
/** Gets what a notification listener threw, and the notification's method. */
export type ListenerErrorHandler = (error: unknown, method: string) => void;

/** Pure: the one stderr line for a listener's error when nobody handles them. */
export function listenerErrorLine(host: string, method: string, error: unknown): string {
  const said = error instanceof Error ? error.message : String(error);
  return `berth: a listener of ${method} on the connection to ${host} failed: ${said}; the connection goes on (later listener errors are not reported)\n`;
}

export class Listeners {
  private readonly byMethod = new Map<string, Set<Listener>>();
  private readonly errorHandlers = new Set<ListenerErrorHandler>();
  private printed = false;

  constructor(private readonly host: string) {}

  /** Subscribes to a notification method (`"*"`: all, as {method, params}); returns the unsubscribe. */
  on(method: string, listener: Listener): () => void {
    const set = this.byMethod.get(method) ?? new Set<Listener>();
    set.add(listener);
    this.byMethod.set(method, set);
    return () => set.delete(listener);
  }

  /** Receives every error a listener throws or rejects with; returns the unsubscribe. */
  onError(handler: ListenerErrorHandler): () => void {
    this.errorHandlers.add(handler);
    return () => this.errorHandlers.delete(handler);
  }

  /**
   * Hands one notification to its listeners; never throws. To those subscribed when it came: one that a
   * listener adds meanwhile gets the next (iterating the live set, a listener that subscribes anew each
   * time, as a hand-made `once` does, was called again and again within one notification, for ever).
   */
  emit(method: string, params: unknown): void {
    const exact = [...(this.byMethod.get(method) ?? [])];
    const all = [...(this.byMethod.get("*") ?? [])];
    for (const listener of exact) this.run(listener, params, method);
    for (const listener of all) this.run(listener, { method, params }, method);
  }

  private run(listener: Listener, params: unknown, method: string): void {
    try {
      const returned: unknown = listener(params);
      if (returned instanceof Promise) returned.catch((error: unknown) => this.failed(error, method));
    } catch (error) {
      this.failed(error, method);
    }
  }

  private failed(error: unknown, method: string): void {
    if (this.errorHandlers.size === 0) {
      if (this.printed) return;
      this.printed = true;
      try {
        process.stderr.write(listenerErrorLine(this.host, method, error));
      } catch {
        // stderr is gone: nobody to tell
      }
      return;
    }
    for (const handler of this.errorHandlers) {
      try {
        handler(error, method);
      } catch {
        // a handler that throws is not reported again (that could loop)
      }
    }
  }
}
