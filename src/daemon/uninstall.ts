/**
 * `uninstall [--keep-data]`: `down`, then the startup entry, the command
 * link, every PATH block berth wrote, the socket fallback folder and
 * BERTH_HOME (all but settings and token with --keep-data). Idempotent: a
 * second run removes nothing and still succeeds. A user's own lines in their
 * profiles, and a command link that is not ours, are left alone.
 */
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync } from "node:fs";
import { describeError, errnoCode } from "../errors.ts";
import { dirname, join, resolve } from "node:path";
import { PATH_BLOCK_BEGIN, PATH_BLOCK_END, profileNotOurs } from "../install/profile.ts";
import { writeFileAtomic } from "../platform/fs.ts";
import { homeFrom, installLinkFrom, socketPlanFor } from "../platform/paths.ts";
import type { Context } from "./context.ts";
import { down } from "./down.ts";
import { removeSocketDirs } from "./socket-dir.ts";
import { disableStartup } from "./startup.ts";

/** Profiles berth may have written a PATH block into (any placement install ever used). */
const PROFILE_NAMES = [".bashrc", ".bash_profile", ".bash_login", ".profile", ".zshrc", ".zshenv"];
/** Kept by --keep-data, relative to BERTH_HOME. */
const DATA_FILES = [join("daemon", "settings.json"), join("daemon", "remote-control.token")];
/** What berth creates at the top of BERTH_HOME (`.bun`: Bun's cache when berth runs from source). Nothing else is removed. */
const HOME_ENTRIES = new Set(["packages", "daemon", ".bun"]);

export type UninstallResult = {
  status: "uninstalled";
  stopped: { appServer: "stopped" | "notRunning"; keeper: "stopped" | "notRunning" };
  removed: string[];
  kept: string[];
};

/** Pure: the text without berth's marked blocks; `malformed` when markers do not pair up (then nothing changes). */
export function removePathBlocks(text: string): { text: string; blocks: number } | { malformed: true } {
  const lines = text.split("\n");
  const out: string[] = [];
  let blocks = 0;
  let inside = false;
  for (const line of lines) {
    const trimmed = line.trim();
    if (trimmed === PATH_BLOCK_BEGIN) {
      if (inside) return { malformed: true };
      inside = true;
      continue;
    }
    if (trimmed === PATH_BLOCK_END) {
      if (!inside) return { malformed: true };
      inside = false;
      blocks += 1;
      continue;
    }
    if (!inside) out.push(line);
  }
  if (inside) return { malformed: true };
  return { text: out.join("\n"), blocks };
}

function profilePaths(env: NodeJS.ProcessEnv): string[] {
  const home = homeFrom(env);
  const dirs = [home, ...(env.ZDOTDIR ? [env.ZDOTDIR] : [])];
  return [...new Set(dirs.flatMap((dir) => PROFILE_NAMES.map((name) => join(dir, name))))];
}

/**
 * A symlinked profile (a dotfile manager's) is followed to the file it names, as install wrote its block
 * there; each real file once. A profile that cannot be rewritten (a read-only store, EACCES) is reported in
 * `kept` and the uninstall carries on.
 */
function removeProfileBlocks(env: NodeJS.ProcessEnv, removed: string[], kept: string[]): void {
  const seen = new Set<string>();
  for (const path of profilePaths(env)) {
    let real: string;
    let text: string;
    try {
      real = realpathSync(path);
      if (seen.has(real) || !statSync(real).isFile()) continue;
      seen.add(real);
      const notOurs = profileNotOurs(real);
      if (notOurs) {
        if (readFileSync(real, "utf8").includes(PATH_BLOCK_BEGIN)) kept.push(`${path} (${notOurs}; remove the lines from ${PATH_BLOCK_BEGIN} to ${PATH_BLOCK_END} by hand)`);
        continue;
      }
      text = readFileSync(real, "utf8");
    } catch {
      continue;
    }
    if (!text.includes(PATH_BLOCK_BEGIN) && !text.includes(PATH_BLOCK_END)) continue;
    const plan = removePathBlocks(text);
    if ("malformed" in plan) {
      kept.push(`${path} (its berth markers do not form blocks; remove them by hand)`);
      continue;
    }
    try {
      writeFileAtomic(real, plan.text, statSync(real).mode & 0o777);
    } catch (error) {
      kept.push(`${path} (could not remove its PATH block: ${errnoCode(error) ?? describeError(error)}; remove the lines from ${PATH_BLOCK_BEGIN} to ${PATH_BLOCK_END} by hand)`);
      continue;
    }
    removed.push(`${path} (PATH block)`);
  }
}

/** The command link, only when it points into this BERTH_HOME. */
function removeCommandLink(ctx: Context, removed: string[], kept: string[]): void {
  const link = installLinkFrom(ctx.env);
  let target: string;
  try {
    if (!lstatSync(link).isSymbolicLink()) {
      kept.push(`${link} (not a link berth made)`);
      return;
    }
    target = resolve(dirname(link), readlinkSync(link));
  } catch {
    return;
  }
  if (!target.startsWith(`${ctx.layout.home}/`)) {
    kept.push(`${link} (points at ${target}, outside ${ctx.layout.home})`);
    return;
  }
  rmSync(link, { force: true });
  removed.push(link);
}

function removeHome(ctx: Context, keepData: boolean, removed: string[], kept: string[]): void {
  const home = ctx.layout.home;
  if (!existsSync(home)) return;
  if (!keepData) {
    // Only what berth made: a BERTH_HOME pointed at a folder with other files (even $HOME) loses nothing else.
    const others: string[] = [];
    const gone: string[] = [];
    for (const entry of readdirSync(home)) {
      if (!HOME_ENTRIES.has(entry)) {
        others.push(entry);
        continue;
      }
      rmSync(join(home, entry), { recursive: true, force: true });
      gone.push(join(home, entry));
    }
    if (others.length === 0) {
      rmSync(home, { recursive: true, force: true });
      removed.push(home);
    } else {
      removed.push(...gone);
      kept.push(`${home} (holds files berth did not create: ${others.slice(0, 5).join(", ")}${others.length > 5 ? ", …" : ""})`);
    }
    return;
  }
  const keep = new Set(DATA_FILES.map((file) => join(home, file)));
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (dir === home && !HOME_ENTRIES.has(entry)) continue;
      if (keep.has(path)) {
        kept.push(path);
        continue;
      }
      if ([...keep].some((file) => file.startsWith(`${path}/`)) && lstatSync(path).isDirectory()) {
        walk(path);
        continue;
      }
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    }
  };
  walk(home);
}

export async function uninstall(ctx: Context, options: { keepData: boolean }): Promise<UninstallResult> {
  const removed: string[] = [];
  const kept: string[] = [];
  let stopped: UninstallResult["stopped"] = { appServer: "notRunning", keeper: "notRunning" };
  if (existsSync(ctx.layout.home)) {
    const result = await down(ctx);
    stopped = { appServer: result.appServer, keeper: result.keeper };
    const startup = disableStartup(ctx);
    removed.push(...startup.removed);
  }
  removeCommandLink(ctx, removed, kept);
  removeProfileBlocks(ctx.env, removed, kept);
  removeSocketDirs(ctx.layout, ctx.socket, socketPlanFor(ctx.layout.home, ctx.env), removed, kept);
  removeHome(ctx, options.keepData, removed, kept);
  return { status: "uninstalled", stopped, removed, kept };
}
