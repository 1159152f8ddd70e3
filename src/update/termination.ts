/**
 * SIGTERM ends the updater at once, except inside a critical section: a
 * rollback that must not stop between flipping `current` back and restarting
 * the previous release. There the exit waits for the section to end.
 */
let depth = 0;
let requested = false;

export function exitOnTermination(): void {
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.on(signal, () => {
      requested = true;
      if (depth === 0) process.exit(0);
    });
  }
}

export async function critical<T>(action: () => Promise<T>): Promise<T> {
  depth += 1;
  try {
    return await action();
  } finally {
    depth -= 1;
    if (requested && depth === 0) process.exit(0);
  }
}
