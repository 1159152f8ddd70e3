/** Persisted launch settings: loaded over defaults, saved atomically, unknown keys kept. */
import { defu } from "defu";
import { BerthError } from "../errors.ts";
import { readStateFile, writeFileAtomic } from "../platform/fs.ts";
import { BUILT_IN_BASE_URL } from "../version.ts";

export type Settings = {
  remoteControlEnabled: boolean;
  autoUpdate: boolean;
  releaseBaseUrl: string;
  startTimeoutMs: number;
  stopGraceMs: number;
  update: { initialDelayMs: number; intervalMs: number; maxRestartDeferMs: number };
  /** `tls` (cert and key paths) is required for a non-loopback listen; see server/remote-listen.ts. */
  remoteControl: { listen: string; tls?: { cert: string; key: string } };
  logs: { maxBytes: number; keep: number };
  processes: { scrollbackBytes: number; max: number; retainExitedMs: number };
  /** The app-server's quiet period before it unmaps its executable's idle pages (server/idle-trim.ts); 0 never. */
  idleTrimAfterMs: number;
  [unknownKey: string]: unknown;
};

/**
 * The app-server unmaps its idle executable pages after this long without a client event
 * (server/idle-trim.ts). The first request after it pays the minor faults that map them
 * again (~1 ms, bench/README.md): commands of one session (a script, someone typing over
 * SSH) come seconds apart and should not each pay it; a server left alone longer than
 * this is idle, and ten seconds is nothing next to the hours it idles.
 */
export const IDLE_TRIM_AFTER_MS = 10_000;

export function defaultSettings(): Settings {
  return {
    remoteControlEnabled: false,
    autoUpdate: false,
    releaseBaseUrl: BUILT_IN_BASE_URL,
    startTimeoutMs: 10_000,
    stopGraceMs: 60_000,
    update: { initialDelayMs: 300_000, intervalMs: 3_600_000, maxRestartDeferMs: 86_400_000 },
    remoteControl: { listen: "127.0.0.1:0" },
    logs: { maxBytes: 8 * 1024 * 1024, keep: 3 },
    processes: { scrollbackBytes: 2 * 1024 * 1024, max: 64, retainExitedMs: 86_400_000 },
    idleTrimAfterMs: IDLE_TRIM_AFTER_MS,
  };
}

/** What is stored on disk, untouched by defaults or environment (so saving keeps it as the user wrote it). */
export function readStoredSettings(path: string): Record<string, unknown> {
  const text = readStateFile(path);
  if (text === undefined) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new BerthError(
      "STATE_CORRUPT",
      `${path} is not valid JSON (${(error as Error).message}); fix it or move it away (berth will then use defaults). It was left untouched.`,
    );
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new BerthError("STATE_CORRUPT", `${path} must hold a JSON object; fix it or move it away. It was left untouched.`);
  }
  return value as Record<string, unknown>;
}

/** Environment overrides (tests and operators): they win over the file, and are never saved. */
function envOverrides(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const overrides: Record<string, unknown> = {};
  const update: Record<string, number> = {};
  if (env.BERTH_RELEASE_BASE_URL) overrides.releaseBaseUrl = env.BERTH_RELEASE_BASE_URL;
  const initial = Number(env.BERTH_UPDATE_INITIAL_DELAY_MS);
  if (env.BERTH_UPDATE_INITIAL_DELAY_MS && Number.isFinite(initial) && initial >= 0) update.initialDelayMs = initial;
  const interval = Number(env.BERTH_UPDATE_INTERVAL_MS);
  if (env.BERTH_UPDATE_INTERVAL_MS && Number.isFinite(interval) && interval > 0) update.intervalMs = interval;
  if (Object.keys(update).length > 0) overrides.update = update;
  return overrides;
}

/**
 * processes.scrollbackBytes at most: each stream of each process allocates its ring when the process starts,
 * so a value past this (1e10, "unlimited") made every process/spawn fail with an internal error.
 */
export const SCROLLBACK_MAX_BYTES = 256 * 1024 * 1024;

function checkTypes(path: string, settings: Settings): Settings {
  const problems: string[] = [];
  const positive = (name: string, value: unknown) => {
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) problems.push(`${name} must be a non-negative number`);
  };
  /** A count (bytes, processes): a whole number from 0 to `max`. */
  const whole = (name: string, value: unknown, max = Number.MAX_SAFE_INTEGER) => {
    if (!Number.isSafeInteger(value) || (value as number) < 0 || (value as number) > max) problems.push(`${name} must be a whole number from 0 to ${max}`);
  };
  if (typeof settings.remoteControlEnabled !== "boolean") problems.push("remoteControlEnabled must be true or false");
  if (typeof settings.autoUpdate !== "boolean") problems.push("autoUpdate must be true or false");
  if (typeof settings.releaseBaseUrl !== "string") problems.push("releaseBaseUrl must be a string");
  positive("startTimeoutMs", settings.startTimeoutMs);
  positive("stopGraceMs", settings.stopGraceMs);
  positive("update.initialDelayMs", settings.update?.initialDelayMs);
  positive("update.intervalMs", settings.update?.intervalMs);
  positive("logs.maxBytes", settings.logs?.maxBytes);
  if (!Number.isInteger(settings.logs?.keep) || settings.logs.keep < 0) problems.push("logs.keep must be a whole number (0 or more)");
  positive("update.maxRestartDeferMs", settings.update?.maxRestartDeferMs);
  whole("processes.scrollbackBytes", settings.processes?.scrollbackBytes, SCROLLBACK_MAX_BYTES);
  whole("processes.max", settings.processes?.max);
  positive("processes.retainExitedMs", settings.processes?.retainExitedMs);
  positive("idleTrimAfterMs", settings.idleTrimAfterMs);
  if (typeof settings.remoteControl?.listen !== "string") problems.push("remoteControl.listen must be a string like 127.0.0.1:0");
  // Checked here too, not only when remote control starts: a wrong type must not wait until enable-remote-control to show.
  const tls = settings.remoteControl?.tls as { cert?: unknown; key?: unknown } | undefined;
  if (tls !== undefined && !(tls && typeof tls.cert === "string" && tls.cert !== "" && typeof tls.key === "string" && tls.key !== "")) {
    problems.push('remoteControl.tls must be {"cert": "/path/cert.pem", "key": "/path/key.pem"}');
  }
  // tunnels.allowHosts has no entry in defaultSettings: defu would append the defaults to the user's list (src/server/api/tunnel.ts holds them).
  const tunnels = settings.tunnels;
  if (tunnels !== undefined && (typeof tunnels !== "object" || tunnels === null || Array.isArray(tunnels))) {
    problems.push('tunnels must be an object like {"allowHosts": ["127.0.0.1", "::1", "localhost"]}');
  }
  const allowHosts = (tunnels as { allowHosts?: unknown } | undefined)?.allowHosts;
  if (allowHosts !== undefined && !(Array.isArray(allowHosts) && allowHosts.every((h) => typeof h === "string"))) {
    problems.push('tunnels.allowHosts must be an array of host names like ["127.0.0.1", "::1", "localhost"]');
  }
  if (problems.length > 0) {
    throw new BerthError("STATE_CORRUPT", `${path}: ${problems.join("; ")}. Fix the file; it was left untouched.`);
  }
  return settings;
}

/** The update loop never checks more often than this, whatever update.intervalMs says (0 would busy-loop). */
export const UPDATE_INTERVAL_FLOOR_MS = 1_000;

/**
 * The longest any duration setting is taken to be (~317 years: "never" on any
 * machine). Past it, a date computed from now is Invalid Date (the keeper
 * crashed on update.initialDelayMs 1e300), and the sh keeper's 64-bit
 * centisecond arithmetic overflows or, from 1e21, sees "1e+21" (it died on
 * startTimeoutMs 1e300). Timers still need timers.ts: this is past 2^31-1 ms.
 */
export const DURATION_SETTING_MAX_MS = 10_000_000_000_000;

/** Pure: `settings` with every duration setting at most DURATION_SETTING_MAX_MS (what is stored is left as written). */
export function boundDurations(settings: Settings): Settings {
  const bound = (ms: number) => Math.min(ms, DURATION_SETTING_MAX_MS);
  const { update, processes } = settings;
  return {
    ...settings,
    startTimeoutMs: bound(settings.startTimeoutMs),
    stopGraceMs: bound(settings.stopGraceMs),
    idleTrimAfterMs: bound(settings.idleTrimAfterMs),
    update: { ...update, initialDelayMs: bound(update.initialDelayMs), intervalMs: bound(update.intervalMs), maxRestartDeferMs: bound(update.maxRestartDeferMs) },
    processes: { ...processes, retainExitedMs: bound(processes.retainExitedMs) },
  };
}

/** Every key berth reads: the defaults' and those without a default (checkTypes); `true` marks a leaf. */
function knownSettings(): Record<string, unknown> {
  const defaults = defaultSettings();
  return { ...defaults, remoteControl: { ...defaults.remoteControl, tls: true }, tunnels: { allowHosts: true } };
}

/**
 * Pure: the keys berth knows that the file sets to null, as dotted paths (unknown keys are the user's own).
 * defu takes a null for "missing" and fills in the default, which would silently reset what the user wrote.
 */
export function nullSettings(stored: Record<string, unknown>, known: Record<string, unknown> = knownSettings(), prefix = ""): string[] {
  const found: string[] = [];
  for (const [key, value] of Object.entries(stored)) {
    if (!Object.hasOwn(known, key)) continue;
    const inner = known[key];
    if (value === null) found.push(`${prefix}${key}`);
    else if (isPlainObject(value) && isPlainObject(inner)) found.push(...nullSettings(value, inner, `${prefix}${key}.`));
  }
  return found;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function loadSettings(path: string, env: NodeJS.ProcessEnv = process.env): Settings {
  const stored = readStoredSettings(path);
  const nulls = nullSettings(stored);
  if (nulls.length > 0) {
    throw new BerthError("STATE_CORRUPT", `${path}: ${nulls.map((key) => `${key} must not be null (remove it to use the default)`).join("; ")}. Fix the file; it was left untouched.`);
  }
  const settings = boundDurations(checkTypes(path, defu(envOverrides(env), stored, defaultSettings()) as Settings));
  if (settings.update.intervalMs < UPDATE_INTERVAL_FLOOR_MS) {
    settings.update = { ...settings.update, intervalMs: UPDATE_INTERVAL_FLOOR_MS };
  }
  return settings;
}

/** Applies a change to what is stored (keeping unknown keys) and writes it atomically. */
export function updateSettings(path: string, change: Partial<Settings>, env: NodeJS.ProcessEnv = process.env): Settings {
  const stored = readStoredSettings(path);
  const next = { ...stored, ...change };
  writeFileAtomic(path, `${JSON.stringify(next, null, 2)}\n`);
  return loadSettings(path, env);
}
