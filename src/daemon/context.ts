/**
 * What every lifecycle command knows before it acts: where BERTH_HOME is,
 * whether this platform is supported, whether the state folders are safe,
 * and which managed binary it would launch.
 */
import { existsSync, readlinkSync, realpathSync, statSync } from "node:fs";
import { basename } from "node:path";
import { BerthError, describeError, errnoCode, isBerthError } from "../errors.ts";
import { assertTrustedBinary, ensureSafeDir } from "../platform/fs.ts";
import { berthHomeFrom, layoutFor, socketPlanFor, type Layout, type SocketPlan } from "../platform/paths.ts";
import { defaultSettings, loadSettings, type Settings } from "./settings.ts";
import { checkSocketDir, ensureSocketDir, recordedSocketPlan } from "./socket-dir.ts";
import { warn } from "../diagnostics.ts";
import { BUILT_IN_BASE_URL } from "../version.ts";

export type Context = {
  layout: Layout;
  socket: SocketPlan;
  env: NodeJS.ProcessEnv;
};

export function isSupportedPlatform(platform: string, arch: string): boolean {
  return (platform === "linux" || platform === "darwin") && (arch === "x64" || arch === "arm64");
}

export function assertSupportedPlatform(): void {
  if (!isSupportedPlatform(process.platform, process.arch)) {
    throw new BerthError(
      "UNSUPPORTED_PLATFORM",
      `berth runs on Linux and macOS (x64, arm64); this is ${process.platform}-${process.arch}. Nothing was changed.`,
    );
  }
}

export function openContext(env: NodeJS.ProcessEnv = process.env): Context {
  assertSupportedPlatform();
  const layout = layoutFor(berthHomeFrom(env));
  return { layout, socket: recordedSocketPlan(layout, socketPlanFor(layout.home, env)), env };
}

/**
 * Creates (0700) and checks the folders a mutating command writes into. The
 * socket's fallback folder is chosen again (socket-dir.ts): a long-running
 * process (the updater) follows the folder another command recorded.
 */
export function prepareStateDirs(ctx: Context): void {
  ensureSafeDir(ctx.layout.home);
  ensureSafeDir(ctx.layout.daemonDir);
  if (ctx.socket.fallbackDir) ctx.socket = ensureSocketDir(ctx.layout, socketPlanFor(ctx.layout.home, ctx.env));
}

/** Read-only commands check what exists without creating anything. */
export function checkExistingStateDirs(ctx: Context): void {
  for (const dir of [ctx.layout.home, ctx.layout.daemonDir]) {
    if (existsSync(dir)) ensureSafeDir(dir);
  }
  checkSocketDir(ctx.socket);
}

/** Two spellings of BERTH_HOME name the same folder (one may go through a symlink). */
export function sameHome(a: string, b: string): boolean {
  if (a === b) return true;
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}

export function settingsOf(ctx: Context): Settings {
  return loadSettings(ctx.layout.settingsFile, ctx.env);
}

/** Pure: `releases/1.4.0-linux-x64` → `1.4.0`; build metadata is kept (`2.0.0+b1-linux-x64` → `2.0.0+b1`). */
export function versionFromReleaseDir(name: string): string | undefined {
  const match = /^(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+?)?(?:\+[0-9A-Za-z.-]+?)?)-(linux|darwin)-(x64|arm64)(-musl)?$/.exec(name);
  return match?.[1];
}

export type ManagedInstall = { binaryPath: string; version: string | null; releaseDir: string | null };

export function managedInstall(ctx: Context): ManagedInstall {
  let releaseDir: string | null = null;
  try {
    releaseDir = basename(readlinkSync(ctx.layout.currentLink));
  } catch {
    // no current link
  }
  return {
    binaryPath: ctx.layout.managedBinary,
    version: releaseDir ? (versionFromReleaseDir(releaseDir) ?? null) : null,
    releaseDir,
  };
}

/** Where install.sh lives: the environment's base URL, else the settings' (which default to the compiled-in one). */
function installBaseUrl(ctx: Context): string {
  let base = ctx.env.BERTH_RELEASE_BASE_URL ?? "";
  if (!base) {
    try {
      base = settingsOf(ctx).releaseBaseUrl;
    } catch {
      base = BUILT_IN_BASE_URL;
    }
  }
  return base.replace(/\/+$/, "") || "<release base URL>";
}

/** NOT_INSTALLED with the way to fix it, when the managed binary is missing or not executable. */
export function assertManagedBinary(ctx: Context): ManagedInstall {
  const install = managedInstall(ctx);
  try {
    const stat = statSync(install.binaryPath);
    if (!stat.isFile() || (stat.mode & 0o111) === 0) throw Object.assign(new Error("not executable"), { code: "EACCES" });
  } catch (error) {
    const what = errnoCode(error) === "ENOENT" ? "is missing" : "is not an executable file";
    throw new BerthError(
      "NOT_INSTALLED",
      `the managed berth binary ${install.binaryPath} ${what}. Install it with \`curl -fsSL ${installBaseUrl(ctx)}/install.sh | sh\` or, from a downloaded berth binary, \`./berth install\`.`,
    );
  }
  assertTrustedBinary(ctx.layout.home, install.binaryPath);
  return install;
}

/**
 * Stopping needs no settings beyond defaults: a corrupt settings.json must not keep a server running, nor one
 * berth will not read (UNSAFE_STATE: a symlink into a dotfiles folder, a FIFO), which is left as it is.
 */
export function settingsOrDefaults(ctx: Context): Settings {
  try {
    return settingsOf(ctx);
  } catch (error) {
    if (!isBerthError(error, "STATE_CORRUPT") && !isBerthError(error, "UNSAFE_STATE")) throw error;
    warn(`${describeError(error)} Stopping with default settings.`);
    return defaultSettings();
  }
}
