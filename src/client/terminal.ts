/**
 * This machine's terminal for `remote shell|attach`: raw mode that is undone
 * on every way out (normal return, exceptions, SIGTERM/SIGHUP/SIGQUIT, process
 * exit; SIGINT/SIGTERM/SIGHUP/SIGQUIT), the window size, and SIGWINCH.
 */
import { type ReadStream } from "node:tty";

export type TerminalSize = { cols: number; rows: number };
const FALLBACK_SIZE: TerminalSize = { cols: 80, rows: 24 };
/** In raw mode the keyboard sends no signals; these come from elsewhere (kill, a closed terminal). */
const EXIT_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] as const;

export function terminalSize(): TerminalSize {
  const cols = process.stdout.columns;
  const rows = process.stdout.rows;
  return cols && rows ? { cols, rows } : FALLBACK_SIZE;
}

/** `stty [-]opost` on our terminal (stdin); best effort: a missing stty only leaves doubled carriage returns. */
function setOutputProcessing(on: boolean): void {
  try {
    Bun.spawnSync(["stty", on ? "opost" : "-opost"], { stdin: "inherit", stdout: "ignore", stderr: "ignore" });
  } catch {
    // no stty
  }
}

export type RawTerminal = {
  /** Undoes raw mode and every handler; safe to call more than once. */
  restore(): void;
};

/**
 * Puts stdin in raw mode (when it is a terminal) and streams its bytes to
 * `onInput`; a promise it returns stops reading stdin until it settles (the
 * input is held back where it comes from). `onResize` runs on SIGWINCH. A
 * terminating signal restores the terminal, runs `onSignal`, which must end
 * the program.
 */
export function rawTerminal(handlers: {
  onInput(data: Uint8Array): Promise<unknown> | undefined;
  onResize(size: TerminalSize): void;
  onSignal(signal: string): void;
}): RawTerminal {
  const stdin = process.stdin as ReadStream;
  const wasRaw = stdin.isTTY ? stdin.isRaw : false;
  if (stdin.isTTY) {
    stdin.setRawMode(true);
    // Node's raw mode keeps output processing (\n → \r\n): the remote terminal already did that.
    setOutputProcessing(false);
  }
  let held = false;
  const onData = (chunk: Buffer) => {
    const hold = handlers.onInput(new Uint8Array(chunk));
    if (!hold || held) return;
    held = true;
    stdin.pause();
    void hold.finally(() => {
      held = false;
      if (!restored) stdin.resume();
    });
  };
  const onWinch = () => handlers.onResize(terminalSize());
  const signalHandlers = EXIT_SIGNALS.map((signal) => {
    const handler = () => {
      restore();
      handlers.onSignal(signal);
    };
    process.on(signal, handler);
    return [signal, handler] as const;
  });
  let restored = false;
  function restore() {
    if (restored) return;
    restored = true;
    stdin.off("data", onData);
    stdin.pause();
    process.off("SIGWINCH", onWinch);
    process.off("exit", restore);
    for (const [signal, handler] of signalHandlers) process.off(signal, handler);
    if (stdin.isTTY) {
      try {
        stdin.setRawMode(wasRaw);
      } catch {
        // A hung-up terminal cannot be set (EIO): nothing is left to put back, and a throw here would keep a
        // terminating signal from onSignal (Bun goes on running after a signal listener throws).
      }
      setOutputProcessing(true);
    }
  }
  process.on("SIGWINCH", onWinch);
  process.on("exit", restore);
  stdin.on("data", onData);
  stdin.resume();
  return { restore };
}
