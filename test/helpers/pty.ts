/**
 * A command run on a real pseudo-terminal (Bun.Terminal), as a person's
 * terminal would run it: keystrokes in, everything the terminal shows out.
 */
import type { Subprocess } from "bun";
import { existsSync } from "node:fs";
import { eventually } from "./berth.ts";

export const PTY_WAIT_MS = 20_000;

export class PtyProcess {
  output = "";
  readonly proc: Subprocess;
  private readonly decoder = new TextDecoder();
  private readonly watchers = new Set<() => void>();

  constructor(cmd: string[], env: Record<string, string>, size = { cols: 120, rows: 40 }) {
    this.proc = Bun.spawn(cmd, {
      env,
      terminal: {
        cols: size.cols,
        rows: size.rows,
        data: (_terminal, data) => {
          this.output += this.decoder.decode(data, { stream: true });
          for (const watcher of this.watchers) watcher();
        },
      },
    });
  }

  get pid(): number {
    return this.proc.pid;
  }

  type(text: string): void {
    this.proc.terminal?.write(text);
  }

  resize(cols: number, rows: number): void {
    this.proc.terminal?.resize(cols, rows);
  }

  /** Waits until the output (from `from` on) matches; returns whether it did. */
  async waitFor(pattern: string | RegExp, timeoutMs = PTY_WAIT_MS, from = 0): Promise<boolean> {
    const matches = () => {
      const text = this.output.slice(from);
      return typeof pattern === "string" ? text.includes(pattern) : pattern.test(text);
    };
    return eventually(matches, timeoutMs, 20);
  }

  /** Types `keys` again every second until the output after the first try matches (for state that settles: a program starting, a resize). */
  async retypeUntil(keys: string, pattern: string | RegExp, timeoutMs = PTY_WAIT_MS): Promise<boolean> {
    const from = this.output.length;
    return eventually(async () => {
      this.type(keys);
      return this.waitFor(pattern, 1_000, from);
    }, timeoutMs);
  }

  /** Resolves as soon as output from `from` on contains `text` (checked on every chunk: for timing), or rejects at the deadline. */
  until(text: string, from: number, timeoutMs = PTY_WAIT_MS): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!this.output.includes(text, from)) return;
        clearTimeout(timer);
        this.watchers.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.watchers.delete(check);
        reject(new Error(`no ${JSON.stringify(text)} within ${timeoutMs} ms; output ends ${JSON.stringify(this.output.slice(-300))}`));
      }, timeoutMs);
      this.watchers.add(check);
      check();
    });
  }

  async exited(timeoutMs = PTY_WAIT_MS): Promise<number | null> {
    await eventually(() => this.proc.exitCode !== null, timeoutMs);
    return this.proc.exitCode;
  }

  /**
   * Ends the command and everything it runs, then closes the terminal. The command leads the terminal's session
   * and process group (its pid is the group's id, never reused while a member lives): a client it runs that
   * outlives the hangup is in that group. One did (`remote attach`, stuck restoring a hung-up terminal).
   */
  kill(): void {
    // While a member lives, the kernel gives the group's id to no new process; once the leader has ended (and been
    // reaped), a live process with its pid means the group is empty and that pid someone else's (pids wrap within a
    // run of the suite), maybe leading a group of its own: that group is not signalled.
    const leaderEnded = this.proc.exitCode !== null || this.proc.signalCode !== null;
    if (!(leaderEnded && existsSync(`/proc/${this.proc.pid}`))) {
      try {
        process.kill(-this.proc.pid, "SIGKILL");
      } catch {
        // nobody left in the group
      }
    }
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
    this.proc.terminal?.close();
  }
}
