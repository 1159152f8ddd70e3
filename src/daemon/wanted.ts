/**
 * The wanted state of the app-server, persisted so the keeper (a separate
 * process) knows whether an exit was asked for: `start`, `restart` and
 * `bootstrap` want it running; `stop` and `down` want it stopped.
 */
import { rmSync } from "node:fs";
import { errnoCode } from "../errors.ts";
import { readStateFile, stageWrite, writeFileAtomic, type StagedWrite } from "../platform/fs.ts";
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

/**
 * The wish as saved; UNSAFE_STATE for a symlink, FIFO or anything but a small
 * regular file there (a FIFO would block `status` and the keeper for ever, a
 * link to /dev/zero would fill their memory).
 */
export function readWanted(ctx: Context): Wanted {
  return parseWanted(readStateFile(ctx.layout.wantedFile));
}

/** Written under daemon.lock by the command that expresses the user's intent. */
export function writeWanted(ctx: Context, appServer: Wanted["appServer"], options: { down?: boolean } = {}): void {
  writeFileAtomic(ctx.layout.wantedFile, wantedText(appServer, options));
}

function wantedText(appServer: Wanted["appServer"], options: { down?: boolean } = {}): string {
  const wanted: Wanted = { appServer, since: new Date().toISOString(), ...(options.down ? { down: true as const } : {}) };
  return `${JSON.stringify(wanted)}\n`;
}

export type WantedChange = {
  /**
   * Begins the write ahead (stageWrite), before the command acts: a full disk
   * then fails the command while nothing has been signalled or spawned.
   * Nothing on a read-only file system (see `write`).
   */
  stage(): void;
  /** writeWanted(ctx, appServer) (completing the staged write, if any), remembering that it was written. */
  write(): void;
  /** After a failed command: puts back the file as it was before `write` (nothing when `write` never ran). */
  undo(): void;
  /** Whether `write` ran: a command that failed after acting (STOP_TIMEOUT) keeps a written wish. */
  readonly written: boolean;
};

/**
 * A change of the wanted state that the command can take back if it then
 * fails (under daemon.lock, so the keeper never sees the in-between). What
 * was there is kept byte for byte; a file that could not be read meant
 * "stopped" (parseWanted) and is put back as that.
 */
export function wantedChange(ctx: Context, appServer: Wanted["appServer"], options: { down?: boolean } = {}): WantedChange {
  let previous: { text: string | undefined } | undefined;
  try {
    previous = { text: readStateFile(ctx.layout.wantedFile) };
  } catch {
    // unreadable: undo writes "stopped", what it meant
  }
  let written = false;
  let staged: StagedWrite | undefined;
  return {
    stage() {
      try {
        staged = stageWrite(ctx.layout.wantedFile, wantedText(appServer, options));
      } catch (error) {
        // Nothing can be staged on a read-only file system: `write` meets it as before, and each command
        // decides there (`stop` still stops).
        if (errnoCode(error) !== "EROFS") throw error;
      }
    },
    write() {
      if (staged) staged.commit();
      else writeWanted(ctx, appServer, options);
      written = true;
    },
    undo() {
      staged?.abandon();
      if (!written) return;
      if (!previous) writeWanted(ctx, "stopped");
      else if (previous.text === undefined) rmSync(ctx.layout.wantedFile, { force: true });
      else writeFileAtomic(ctx.layout.wantedFile, previous.text);
    },
    get written() {
      return written;
    },
  };
}
