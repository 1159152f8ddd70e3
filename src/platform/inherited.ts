/**
 * Signal state berth's own process inherited from whoever started it (a
 * script, `curl … | sh`, cron, a Python daemon, a CI harness). Dispositions
 * set to "ignore" and blocked signals survive exec, and supervisors (systemd,
 * s6, runit) reset both before they run a service; berth must do the same for
 * the two that break it:
 * - SIGCHLD ignored: the kernel reaps berth's children itself, so Bun's
 *   waitpid fails with ECHILD: `await child.exited` rejects and spawnSync
 *   reports exit code null (install's and doctor's checks, `remote`'s ssh,
 *   the app-server's process/spawn).
 * - a blocked mask: Bun.spawn hands the calling thread's mask to the child,
 *   so the app-server, the keeper and users' processes (`process/kill`
 *   SIGTERM, Ctrl-C) would ignore the signals the parent had blocked.
 * Every other ignored signal is the parent's wish and is kept (`nohup berth
 * logs --follow` stays immune to SIGHUP). Bun's children get default
 * dispositions; their mask is berth's, cleared here.
 *
 * On Linux one read of /proc/self/status decides (~0.2 M instructions of a
 * compiled command, so main.ts skips it for the commands that start nothing),
 * and the C library is loaded only when something is wrong. Elsewhere (or
 * without /proc) SIGCHLD is reset without looking (no file tells), and a
 * blocked mask is left as it is.
 *
 * Also inherited: Bun's own runtime options in the environment (see
 * BUN_RUNTIME_ENV), which berth must not hand on to what it launches.
 */
import { readFileSync } from "node:fs";

/** SIGCHLD's number on Linux (every architecture berth targets). */
const SIGCHLD_LINUX = 17;

/** SigBlk and SigIgn of /proc/<pid>/status: the kernel's hex masks, bit n-1 for signal n. */
export type SignalState = { blocked: string; ignored: string };
export type SignalRepairs = { resetChild: boolean; unblockAll: boolean };

const HEX_DIGITS = "0123456789abcdefABCDEF";
/** The kernel prints 64-bit masks as 16 hex digits. */
const MASK_DIGITS_MAX = 16;

/** The hex mask after `<name>:` (at a line's start) and blanks, lowercased, or undefined. */
function maskField(status: string, name: string): string | undefined {
  const key = `${name}:`;
  const first = status.startsWith(key);
  const at = first ? 0 : status.indexOf(`\n${key}`) + 1;
  if (at === 0 && !first) return undefined;
  let start = at + key.length;
  while (status[start] === "\t" || status[start] === " ") start += 1;
  let end = start;
  while (end < status.length && HEX_DIGITS.includes(status[end] as string)) end += 1;
  const after = status[end];
  if (end === start || end - start > MASK_DIGITS_MAX || (after !== undefined && after !== "\n")) return undefined;
  return status.slice(start, end).toLowerCase();
}

/** Pure: the blocked and ignored sets (SigBlk, SigIgn) of a /proc/<pid>/status text, or undefined when either is missing. */
export function parseSignalState(status: string): SignalState | undefined {
  const blocked = maskField(status, "SigBlk");
  const ignored = maskField(status, "SigIgn");
  return blocked === undefined || ignored === undefined ? undefined : { blocked, ignored };
}

/** Pure: whether a hex mask holds `signal` (bit signal-1). */
export function maskHas(mask: string, signal: number): boolean {
  const bit = signal - 1;
  const digit = mask.length - 1 - Math.floor(bit / 4);
  return digit >= 0 && (parseInt(mask[digit] as string, 16) & (1 << bit % 4)) !== 0;
}

/** Pure: what must be undone of an inherited state (Linux signal numbers). */
export function signalRepairs(state: SignalState): SignalRepairs {
  let blocked = false;
  for (let i = 0; i < state.blocked.length; i += 1) if (state.blocked[i] !== "0") blocked = true;
  return { resetChild: maskHas(state.ignored, SIGCHLD_LINUX), unblockAll: blocked };
}

/** Sets SIGCHLD back to its default: adding and removing a listener leaves Bun's handler off and SIG_DFL in place. */
function resetChildSignal(): void {
  const noop = () => {};
  process.on("SIGCHLD", noop);
  process.off("SIGCHLD", noop);
}

/** This process's SigBlk/SigIgn (Linux), or undefined where no /proc tells (macOS, a bare chroot). */
function ownSignalState(): SignalState | undefined {
  if (process.platform !== "linux") return undefined;
  try {
    return parseSignalState(readFileSync("/proc/self/status", "latin1"));
  } catch {
    return undefined;
  }
}

/** Undoes an ignored SIGCHLD and a blocked signal mask (see the module comment); before berth spawns or waits on anything. */
export async function repairInheritedSignals(options: { daemon?: boolean } = {}): Promise<void> {
  const state = ownSignalState();
  if (!state) {
    resetChildSignal(); // cannot look: reset anyway (a no-op when it was the default)
    return;
  }
  const repairs = signalRepairs(state);
  if (repairs.resetChild) resetChildSignal();
  // A daemon drops a terminal's signal that reached it before its setsid (see spawnShieldedFromTerminal).
  if (repairs.unblockAll) (await import("./ffi.ts")).unblockAllSignals({ discardTerminalSignals: options.daemon === true });
}

/**
 * Whether this process has a controlling terminal (Linux: tty_nr of /proc/self/stat), whose hangup, ^C, ^\
 * or ^Z reaches its foreground group. False where nothing tells.
 */
export function hasControllingTerminal(): boolean {
  if (process.platform !== "linux") return false;
  try {
    const stat = readFileSync("/proc/self/stat", "latin1");
    // After the name: state, ppid, pgrp, session, tty_nr.
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ", 5)[4]) !== 0;
  } catch {
    return false;
  }
}

/**
 * The wrapper for a daemon's detached spawn: with a controlling terminal, the terminal's signals are blocked
 * around it (ffi.ts withTerminalSignalsBlocked). A just-spawned app-server or keeper is in berth's process
 * group until its setsid, and a hangup or ^C of that terminal then (`curl … | sh` over `ssh -tt`, dropped)
 * killed it; it now starts with them blocked and, a daemon, discards them and unblocks. Without a terminal
 * (`ssh host berth start`, cron) nothing is loaded.
 */
export async function terminalShield(): Promise<<T>(spawn: () => T) => T> {
  if (!hasControllingTerminal()) return (spawn) => spawn();
  return (await import("./ffi.ts")).withTerminalSignalsBlocked;
}

/**
 * Variables Bun reads at start, even in a compiled program: BUN_OPTIONS holds
 * extra runtime flags (a developer's `--preload ./setup.ts`, `--watch`,
 * `--hot`), BUN_INSPECT* a debugger to wait for (an IDE's debug terminal).
 * They have done whatever they do to this process by the time berth runs;
 * handed on, they would follow berth's daemons into another folder for days (a
 * relative preload then fails every launch) and every Bun program a user
 * starts through the app-server.
 */
export const BUN_RUNTIME_ENV: readonly string[] = ["BUN_OPTIONS", "BUN_INSPECT", "BUN_INSPECT_CONNECT_TO", "BUN_INSPECT_NOTIFY", "BUN_INSPECT_PRELOAD"];

/** Removes BUN_RUNTIME_ENV from `env` (process.env by default), so no child berth starts gets them; returns the names removed. */
export function dropBunRuntimeEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  const removed: string[] = [];
  for (const name of BUN_RUNTIME_ENV) {
    if (env[name] === undefined) continue;
    delete env[name];
    removed.push(name);
  }
  return removed;
}

/**
 * The umask of whoever first ran berth, kept in the environment (octal) for the app-server: berth runs with
 * 077 (its state is private), but users' processes must create files as their ssh session would (0644 under
 * the usual 022), not 0600. Set once by the first berth of a chain (main.ts); daemons and the keeper's steps
 * inherit it; users' processes never see it (the manager removes it from their environment).
 */
export const USER_UMASK_ENV = "BERTH_USER_UMASK";

/** Pure: a umask as USER_UMASK_ENV holds it (octal, at most 0777); undefined for anything else. */
export function parseUmask(text: string | undefined): number | undefined {
  if (text === undefined || !/^[0-7]{1,4}$/.test(text)) return undefined;
  const value = Number.parseInt(text, 8);
  return value <= 0o777 ? value : undefined;
}

/**
 * Runs `spawn` (a Bun.spawn of a user's process) under the user's umask from `env`, berth's own restored
 * before this returns; without a valid one, under berth's. Bun.spawn forks and execs inside the call, so no
 * other code of berth's runs under the user's umask, and every state file berth creates names its mode anyway.
 */
export function spawnUnderUserUmask<T>(spawn: () => T, env: NodeJS.ProcessEnv = process.env): T {
  const user = parseUmask(env[USER_UMASK_ENV]);
  if (user === undefined) return spawn();
  const own = process.umask(user);
  try {
    return spawn();
  } finally {
    process.umask(own);
  }
}
