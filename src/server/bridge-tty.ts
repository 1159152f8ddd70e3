/**
 * `berth connect` whose stdin is a terminal: a client that asked ssh for one
 * (`ssh -t host berth connect`, an SSH library that requests a pty by
 * default), or a person trying it. The terminal's line discipline breaks the
 * protocol (spec "Connecting": each stdin line one frame, each stdout line one
 * server frame): it echoes every request back onto stdout, where the client
 * reads it as a message from the server, and in canonical mode it cuts lines
 * at 4 KiB, so a longer request arrives cut short. While connect runs, the
 * terminal passes bytes through instead; it is put back on every way out.
 */
import { isCharacterDevice } from "../stdio.ts";

/**
 * No echo, no canonical line editing (and its 4095-byte line limit), no
 * output processing (`\n` stays `\n`). Kept: Ctrl-C still interrupts (ISIG; a
 * JSON line never holds a raw control byte), a CR still ends a line (ICRNL), and Ctrl-D still ends stdin
 * (bridgeStdin).
 */
const PROTOCOL_MODE = ["-echo", "-icanon", "-iexten", "-ixon", "-opost", "min", "1", "time", "0"];
/** Signals that end connect: the terminal is put back first, then the signal does what it would have. */
const RESTORE_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] as const;

/** `stty ARGS` on our stdin; its output, or undefined when there is no stty or it failed. */
function stty(args: string[]): string | undefined {
  try {
    const result = Bun.spawnSync(["stty", ...args], { stdin: "inherit", stdout: "pipe", stderr: "ignore" });
    return result.exitCode === 0 ? result.stdout.toString().trim() : undefined;
  } catch {
    return undefined;
  }
}

/** Ctrl-D: without line editing the terminal passes it on as this byte, which no JSON text holds; it ends stdin. */
const CTRL_D = 0x04;

/**
 * When stdin is a terminal: protocol mode until connect ends (best effort: without stty nothing changes).
 * Returns whether it is on. A pipe or socket (every SSH client without a pty) is told apart by fstat alone:
 * importing node:tty costs a compiled connect ~2.3 ms (it loads node:net and streams), so only a character
 * device pays it.
 */
export async function protocolTerminal(): Promise<boolean> {
  if (!isCharacterDevice(0) || !(await import("node:tty")).isatty(0)) return false;
  const saved = stty(["-g"]);
  if (saved === undefined || stty(PROTOCOL_MODE) === undefined) return false;
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    stty([saved]);
  };
  process.on("exit", restore);
  for (const signal of RESTORE_SIGNALS) {
    const handler = () => {
      restore();
      for (const other of RESTORE_SIGNALS) process.removeAllListeners(other);
      process.kill(process.pid, signal);
    };
    process.on(signal, handler);
  }
  return true;
}

/** stdin for the bridge: in protocol mode a Ctrl-D ends it, as it did in the terminal's line editing. */
export function bridgeStdin(terminal: boolean): ReadableStream<Uint8Array> {
  const stdin = Bun.stdin.stream();
  if (!terminal) return stdin;
  const reader = stdin.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) return controller.close();
      const at = value.indexOf(CTRL_D);
      if (at < 0) return controller.enqueue(value);
      if (at > 0) controller.enqueue(value.subarray(0, at));
      controller.close();
      void reader.cancel().catch(() => {});
    },
    cancel: (reason) => reader.cancel(reason),
  });
}
