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

/** Where the block goes in a profile: "top" runs before any "not interactive: return" guard. */
export type Placement = "top" | "end";
export type ProfileTarget = { path: string; placement: Placement };

export type ProfileChoice =
  | { kind: "profiles"; targets: ProfileTarget[] }
  | { kind: "unsupported"; shell: string; hint: string };

/**
 * Pure: the profiles in which a non-interactive `ssh host berth …` finds the
 * block too (spec "Releases"). bash reads ~/.bashrc for ssh commands, but
 * Debian-style files return early when not interactive, so the block goes at
 * its top; login shells read ~/.profile. zsh reads $ZDOTDIR/.zshenv (or
 * ~/.zshenv) in every shell. Other POSIX shells: ~/.profile. fish and other
 * non-POSIX shells → none (we say what to run instead).
 */
export function chooseProfile(input: { shell?: string; home: string; platform: string; zdotdir?: string; dir: string }): ProfileChoice {
  const shell = basename(input.shell || "sh").replace(/^-/, "");
  if (shell === "zsh") {
    const base = input.zdotdir && isAbsolute(input.zdotdir) ? input.zdotdir : input.home;
    return { kind: "profiles", targets: [{ path: join(base, ".zshenv"), placement: "end" }] };
  }
  if (shell === "bash") {
    return {
      kind: "profiles",
      targets: [
        { path: join(input.home, ".bashrc"), placement: "top" },
        { path: join(input.home, ".profile"), placement: "end" },
      ],
    };
  }
  if (NON_POSIX_SHELLS.has(shell)) {
    const hint =
      shell === "fish"
        ? `fish does not read POSIX shell profiles; run \`fish_add_path ${input.dir}\` to put berth on PATH`
        : `${shell} does not read POSIX shell profiles; add ${input.dir} to PATH in its configuration yourself`;
    return { kind: "unsupported", shell, hint };
  }
  return { kind: "profiles", targets: [{ path: join(input.home, ".profile"), placement: "end" }] };
}

/**
 * Pure: does the folder need a PATH block? The PATH of the shell running
 * install says nothing about a non-interactive ssh command, which starts from
 * sshd's default PATH plus what the profiles add: a folder under HOME always
 * needs the block; a folder outside HOME that is on PATH already (a system
 * folder like /usr/local/bin) does not.
 */
export function needsPathBlock(dir: string, home: string, pathValue: string | undefined): boolean {
  const normalizedHome = normalizeDir(home || "/");
  const underHome = normalizedHome !== "/" && normalizeDir(dir).startsWith(`${normalizedHome}/`);
  return underHome || !isDirOnPath(dir, pathValue);
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
  | { action: "create" | "append" | "prepend" | "move" | "replace"; text: string }
  | { action: "present" }
  | { action: "malformed"; reason: string };

/** Pure: are all lines before `index` blank or comments (so the block there runs before any guard)? */
function onlyCommentsBefore(lines: string[], index: number): boolean {
  return lines.slice(0, index).every((line) => line.trim() === "" || line.trim().startsWith("#"));
}

/**
 * Pure: what the profile becomes. One block at most: an identical block where
 * it belongs is left alone ("present"), a different one (another folder) is
 * replaced in place; with placement "top" a block below other lines (an old
 * install appended it after the guard) is moved to the top. No block: it is
 * prepended ("top") or appended after a blank line ("end"). Every other line
 * is kept. Markers we did not write as a pair (a begin without an end, two
 * begins) are left for the user to fix.
 */
export function planProfileUpdate(existing: string | undefined, block: string, placement: Placement = "end"): ProfilePlan {
  if (existing === undefined) return { action: "create", text: block };
  const lines = existing.split("\n");
  const begins = lines.flatMap((line, i) => (line.trim() === PATH_BLOCK_BEGIN ? [i] : []));
  const ends = lines.flatMap((line, i) => (line.trim() === PATH_BLOCK_END ? [i] : []));
  const prepend = (rest: string) => `${block}${rest === "" ? "" : rest.startsWith("\n") ? rest : `\n${rest}`}`;
  if (begins.length === 0 && ends.length === 0) {
    if (placement === "top") return { action: "prepend", text: prepend(existing) };
    const separator = existing === "" ? "" : existing.endsWith("\n") ? "\n" : "\n\n";
    return { action: "append", text: `${existing}${separator}${block}` };
  }
  const begin = begins[0] as number;
  const end = ends[0] as number;
  if (begins.length !== 1 || ends.length !== 1 || end < begin) {
    return { action: "malformed", reason: `its ${PATH_BLOCK_BEGIN} … ${PATH_BLOCK_END} markers do not form one block` };
  }
  const before = lines.slice(0, begin);
  const after = lines.slice(end + 1);
  if (placement === "top" && !onlyCommentsBefore(lines, begin)) {
    // Drop the blank line an append put before the old block, keep everything else.
    const kept = before.at(-1)?.trim() === "" ? before.slice(0, -1) : before;
    return { action: "move", text: prepend([...kept, ...after].join("\n")) };
  }
  const current = `${lines.slice(begin, end + 1).join("\n")}\n`;
  if (current === block) return { action: "present" };
  const text = [...before, ...block.replace(/\n$/, "").split("\n"), ...after].join("\n");
  return { action: "replace", text };
}

export type PathUpdate = { pathUpdated: boolean; profile?: string; profiles?: string[]; warning?: string };

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw error;
  }
}

/**
 * Why berth must not rewrite the profile file `real` (a symlinked profile resolved), or undefined: one that is
 * not a regular file (a FIFO would hang the read), or that another user owns (rewritten, it would become ours:
 * root with a user's HOME, a shared dotfile a link points at).
 */
export function profileNotOurs(real: string): string | undefined {
  let stat;
  try {
    stat = statSync(real);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw error;
  }
  if (!stat.isFile()) return `${real} is not a regular file`;
  const uid = process.getuid?.();
  return uid !== undefined && stat.uid !== uid ? `${real} is owned by uid ${stat.uid}, not by you (uid ${uid})` : undefined;
}

/** Adds or moves the block in one profile; a failure becomes a warning that says what to add by hand. */
function updateProfile(target: ProfileTarget, block: string, dir: string): { updated: boolean; warning?: string } {
  try {
    // Write through a symlinked profile (dotfile managers) instead of replacing the link.
    let real = target.path;
    try {
      real = realpathSync(target.path);
    } catch (error) {
      if (errnoCode(error) !== "ENOENT") throw error;
    }
    const notOurs = profileNotOurs(real);
    if (notOurs) return { updated: false, warning: `did not change ${target.path}: ${notOurs}. Add \`export PATH="${dir}:$PATH"\` to it yourself.` };
    const existing = readIfExists(real);
    const plan = planProfileUpdate(existing, block, target.placement);
    if (plan.action === "present") return { updated: false };
    if (plan.action === "malformed") {
      return { updated: false, warning: `did not change ${target.path}: ${plan.reason}. Remove them and run \`berth install\` again, or add ${dir} to PATH yourself.` };
    }
    const mode = existing === undefined ? NEW_PROFILE_MODE : statSync(real).mode & 0o7777;
    writeFileAtomic(real, plan.text, mode);
    chmodSync(real, mode);
    return { updated: true };
  } catch (error) {
    return {
      updated: false,
      warning: `could not add ${dir} to PATH in ${target.path} (${errnoCode(error) ?? String(error)}); add \`export PATH="${dir}:$PATH"\` to it yourself.`,
    };
  }
}

/**
 * Puts `dir` on PATH through the chosen profiles, unless it needs none.
 * Never fails the install: a profile it cannot write becomes a warning.
 */
export function addPathBlock(input: { dir: string; env: NodeJS.ProcessEnv; home: string; platform?: string }): PathUpdate {
  const { dir, env, home } = input;
  if (!needsPathBlock(dir, home, env.PATH)) return { pathUpdated: false };
  const choice = chooseProfile({ shell: env.SHELL, home, platform: input.platform ?? process.platform, zdotdir: env.ZDOTDIR, dir });
  if (choice.kind === "unsupported") return { pathUpdated: false, warning: `${dir} is not on PATH: ${choice.hint}.` };
  const block = renderPathBlock(dir, home);
  const outcomes = choice.targets.map((target) => updateProfile(target, block, dir));
  const warnings = outcomes.flatMap((outcome) => (outcome.warning ? [outcome.warning] : []));
  const profiles = choice.targets.map((target) => target.path);
  return {
    pathUpdated: outcomes.some((outcome) => outcome.updated),
    profile: profiles[0] as string,
    ...(profiles.length > 1 ? { profiles } : {}),
    ...(warnings.length > 0 ? { warning: warnings.join(" ") } : {}),
  };
}
