/**
 * The wanted state of the app-server, persisted so the keeper (a separate
 * process) knows whether an exit was asked for: `start`, `restart` and
 * `bootstrap` want it running; `stop` and `down` want it stopped.
 */
import { readFileSync } from "node:fs";
import { errnoCode } from "../errors.ts";
import { writeFileAtomic } from "../platform/fs.ts";
import type { Context } from "./context.ts";

/** `down`: the keeper is not wanted either, so the startup entry brings nothing back until start/bootstrap. */
export type Wanted = { appServer: "running" | "stopped"; since: string; down?: true };

/** Pure: a file's text → the wanted state; anything unreadable means "stopped" (never start what nobody asked for). */
export function parseWanted(text: string | undefined): Wanted {
  if (text === undefined) return { appServer: "stopped", since: new Date(0).toISOString() };
  try {
    const value = JSON.parse(text) as Partial<Wanted> | null;
    if (value && (value.appServer === "running" || value.appServer === "stopped") && typeof value.since === "string") {
      return { appServer: value.appServer, since: value.since, ...(value.down === true ? { down: true as const } : {}) };
    }
  } catch {
    // fall through
  }
  return { appServer: "stopped", since: new Date(0).toISOString() };
}

export function readWanted(ctx: Context): Wanted {
  try {
    return parseWanted(readFileSync(ctx.layout.wantedFile, "utf8"));
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return parseWanted(undefined);
    throw error;
  }
}

/** Written under daemon.lock by the command that expresses the user's intent. */
export function writeWanted(ctx: Context, appServer: Wanted["appServer"], options: { down?: boolean } = {}): void {
  const wanted: Wanted = { appServer, since: new Date().toISOString(), ...(options.down ? { down: true as const } : {}) };
  writeFileAtomic(ctx.layout.wantedFile, `${JSON.stringify(wanted)}\n`);
}
