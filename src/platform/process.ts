/**
 * Process identity: a pid plus the kernel's start time of that process, so a
 * pid reused by another program is never mistaken for ours. Linux reads
 * /proc/<pid>/stat (never `ps`); macOS asks the kernel through proc_pidinfo.
 */
import { readdirSync, readFileSync } from "node:fs";
import { errnoCode } from "../errors.ts";
import { darwinProcessInfo } from "./ffi.ts";

export type ProcStat = { state: string; pgrp: number; startTime: string };

/** Parses /proc/<pid>/stat. The command name may hold spaces and parentheses, so split after the last ')'. */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const fields = text.slice(close + 2).trim().split(/\s+/);
  // fields[0] is field 3 (state) of proc(5); starttime is field 22, pgrp field 5.
  const state = fields[0];
  const pgrp = Number(fields[2]);
  const startTime = fields[19];
  if (!state || !startTime || !/^\d+$/.test(startTime) || !Number.isInteger(pgrp)) return undefined;
  return { state, pgrp, startTime };
}

/** Zombies and dead tasks have finished running: for us they are gone. */
export function isGoneState(state: string): boolean {
  return state === "Z" || state === "X" || state === "x";
}

let cachedBootId: string | undefined;
function linuxBootId(): string {
  cachedBootId ??= readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  return cachedBootId;
}

function readLinuxStat(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch (error) {
    if (errnoCode(error) === "ENOENT" || errnoCode(error) === "ESRCH") return undefined;
    throw error;
  }
}

/**
 * The identity string recorded for a live process, or undefined when no
 * process runs under that pid (or only a zombie does).
 */
export function processIdentity(pid: number): string | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  if (process.platform === "darwin") {
    const info = darwinProcessInfo(pid);
    return info && !info.zombie ? `darwin/${info.startTime}` : undefined;
  }
  const stat = readLinuxStat(pid);
  if (!stat || isGoneState(stat.state)) return undefined;
  return `${linuxBootId()}/${stat.startTime}`;
}

/** True when the process recorded with this identity is still the one running under pid. */
export function isSameProcess(pid: number, identity: string): boolean {
  return processIdentity(pid) === identity;
}

/** True while any non-zombie process belongs to process group pgid. */
export function isProcessGroupAlive(pgid: number): boolean {
  if (!Number.isInteger(pgid) || pgid <= 1) return false;
  if (process.platform !== "linux") return signalGroup(pgid, 0);
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readLinuxStat(Number(entry));
    if (stat && stat.pgrp === pgid && !isGoneState(stat.state)) return true;
  }
  return false;
}

/** kill(2); false when the target does not exist. EPERM is thrown: that process is not ours. */
export function signalProcess(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (error) {
    if (errnoCode(error) === "ESRCH") return false;
    throw error;
  }
}

/** kill(-pgid): the whole process group. */
export function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  if (!Number.isInteger(pgid) || pgid <= 1) return false;
  return signalProcess(-pgid, signal);
}
