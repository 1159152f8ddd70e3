/**
 * The one marked block `install` adds to one shell profile so that the
 * command link's folder is on PATH. The decisions (which profile, is the
 * folder on PATH already, what the file becomes) are pure; `addPathBlock`
 * is the short I/O wrapper around them.
 */
import { chmodSync, readFileSync, realpathSync, statSync } from "node:fs";
import { basename, isAbsolute, join, resolve } from "node:path";
import { errnoCode } from "../errors.ts";
import { writeFileAtomic } from "../platform/fs.ts";

export const PATH_BLOCK_BEGIN = "# >>> berth >>>";
export const PATH_BLOCK_END = "# <<< berth <<<";
/** A profile berth creates is readable like the ones a system's skeleton provides. */
const NEW_PROFILE_MODE = 0o644;

/** Shells that do not read POSIX sh syntax: berth leaves their configuration alone. */
const NON_POSIX_SHELLS = new Set(["fish", "csh", "tcsh", "nu", "elvish", "xonsh"]);

export type ProfileChoice =
  | { kind: "profile"; path: string }
  | { kind: "unsupported"; shell: string; hint: string };

/**
 * Pure: the profile a login of this user reads, from $SHELL.
 * zsh → $ZDOTDIR/.zshrc (or ~/.zshrc); bash → ~/.bashrc, but ~/.bash_profile
 * on macOS where Terminal opens login shells; fish and other non-POSIX
 * shells → none (we say what to run instead); anything else → ~/.profile.
 */
export function chooseProfile(input: { shell?: string; home: string; platform: string; zdotdir?: string; dir: string }): ProfileChoice {
  const shell = basename(input.shell || "sh").replace(/^-/, "");
  if (shell === "zsh") {
    const base = input.zdotdir && isAbsolute(input.zdotdir) ? input.zdotdir : input.home;
    return { kind: "profile", path: join(base, ".zshrc") };
  }
  if (shell === "bash") return { kind: "profile", path: join(input.home, input.platform === "darwin" ? ".bash_profile" : ".bashrc") };
  if (NON_POSIX_SHELLS.has(shell)) {
    const hint =
      shell === "fish"
        ? `fish does not read POSIX shell profiles; run \`fish_add_path ${input.dir}\` to put berth on PATH`
        : `${shell} does not read POSIX shell profiles; add ${input.dir} to PATH in its configuration yourself`;
    return { kind: "unsupported", shell, hint };
  }
  return { kind: "profile", path: join(input.home, ".profile") };
}

function normalizeDir(dir: string): string {
  return resolve(dir);
}

/** Pure: is `dir` one of the absolute entries of a PATH value (trailing slashes and `..` normalized)? */
export function isDirOnPath(dir: string, pathValue: string | undefined): boolean {
  const wanted = normalizeDir(dir);
  return (pathValue ?? "")
    .split(":")
    .filter((entry) => entry !== "" && isAbsolute(entry))
    .some((entry) => normalizeDir(entry) === wanted);
}

/** Text safe inside double quotes in sh, bash and zsh. */
function escapeForDoubleQuotes(text: string): string {
  return text.replace(/[\\"$`]/g, (c) => `\\${c}`);
}

/** What goes inside the double quotes: `$HOME/.local/bin` when under HOME (survives a renamed home), else the path. */
function shellPathInner(dir: string, home: string): string {
  const normalizedHome = home.replace(/\/+$/, "");
  if (normalizedHome !== "" && dir.startsWith(`${normalizedHome}/`)) {
    return `$HOME${escapeForDoubleQuotes(dir.slice(normalizedHome.length))}`;
  }
  return escapeForDoubleQuotes(dir);
}

/** Pure: the marked block, in POSIX sh (also valid bash and zsh); adds the folder once even in nested shells. */
export function renderPathBlock(dir: string, home: string): string {
  const inner = shellPathInner(normalizeDir(dir), home);
  return [
    PATH_BLOCK_BEGIN,
    "# Added by `berth install` so that the berth command is on PATH.",
    `case ":$PATH:" in`,
    `  *:"${inner}":*) ;;`,
    `  *) export PATH="${inner}:$PATH" ;;`,
    "esac",
    PATH_BLOCK_END,
    "",
  ].join("\n");
}

export type ProfilePlan =
  | { action: "create" | "append" | "replace"; text: string }
  | { action: "present" }
  | { action: "malformed"; reason: string };

/**
 * Pure: what the profile becomes. One block at most: an identical block is
 * left alone ("present"), a different one (another folder) is replaced in
 * place, none is appended after a blank line. Markers we did not write as a
 * pair (a begin without an end, two begins) are left for the user to fix.
 */
export function planProfileUpdate(existing: string | undefined, block: string): ProfilePlan {
  if (existing === undefined) return { action: "create", text: block };
  const lines = existing.split("\n");
  const begins = lines.flatMap((line, i) => (line.trim() === PATH_BLOCK_BEGIN ? [i] : []));
  const ends = lines.flatMap((line, i) => (line.trim() === PATH_BLOCK_END ? [i] : []));
  if (begins.length === 0 && ends.length === 0) {
    const separator = existing === "" ? "" : existing.endsWith("\n") ? "\n" : "\n\n";
    return { action: "append", text: `${existing}${separator}${block}` };
  }
  const begin = begins[0] as number;
  const end = ends[0] as number;
  if (begins.length !== 1 || ends.length !== 1 || end < begin) {
    return { action: "malformed", reason: `its ${PATH_BLOCK_BEGIN} … ${PATH_BLOCK_END} markers do not form one block` };
  }
  const current = `${lines.slice(begin, end + 1).join("\n")}\n`;
  if (current === block) return { action: "present" };
  const before = lines.slice(0, begin);
  const after = lines.slice(end + 1);
  const text = [...before, ...block.replace(/\n$/, "").split("\n"), ...after].join("\n");
  return { action: "replace", text };
}

export type PathUpdate = { pathUpdated: boolean; profile?: string; warning?: string };

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw error;
  }
}

/**
 * Puts `dir` on PATH through the chosen profile, unless it is there already.
 * Never fails the install: a profile it cannot write becomes a warning that
 * says which line to add by hand.
 */
export function addPathBlock(input: { dir: string; env: NodeJS.ProcessEnv; home: string; platform?: string }): PathUpdate {
  const { dir, env, home } = input;
  if (isDirOnPath(dir, env.PATH)) return { pathUpdated: false };
  const choice = chooseProfile({ shell: env.SHELL, home, platform: input.platform ?? process.platform, zdotdir: env.ZDOTDIR, dir });
  if (choice.kind === "unsupported") return { pathUpdated: false, warning: `${dir} is not on PATH: ${choice.hint}.` };
  const block = renderPathBlock(dir, home);
  try {
    // Write through a symlinked profile (dotfile managers) instead of replacing the link.
    let target = choice.path;
    try {
      target = realpathSync(choice.path);
    } catch (error) {
      if (errnoCode(error) !== "ENOENT") throw error;
    }
    const existing = readIfExists(target);
    const plan = planProfileUpdate(existing, block);
    if (plan.action === "present") return { pathUpdated: false, profile: choice.path };
    if (plan.action === "malformed") {
      return {
        pathUpdated: false,
        profile: choice.path,
        warning: `did not change ${choice.path}: ${plan.reason}. Remove them and run \`berth install\` again, or add ${dir} to PATH yourself.`,
      };
    }
    const mode = existing === undefined ? NEW_PROFILE_MODE : statSync(target).mode & 0o7777;
    writeFileAtomic(target, plan.text, mode);
    chmodSync(target, mode);
    return { pathUpdated: true, profile: choice.path };
  } catch (error) {
    return {
      pathUpdated: false,
      warning: `could not add ${dir} to PATH in ${choice.path} (${errnoCode(error) ?? String(error)}); add \`export PATH="${dir}:$PATH"\` to your shell profile yourself.`,
    };
  }
}
