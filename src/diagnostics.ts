/**
 * Warnings found while a command acts (a corrupt pidfile moved aside, a stale
 * socket removed). Domain code records them here instead of printing; the
 * renderer shows them on stderr and in the JSON result's `warnings`.
 */
const collected: string[] = [];

export function warn(message: string): void {
  collected.push(message);
}

export function takeWarnings(): string[] {
  return collected.splice(0, collected.length);
}
