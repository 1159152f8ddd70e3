/**
 * `berth install`: puts an executable into the managed layout
 *
 *   packages/standalone/staging/<random>/berth   copied here first (0755, fsynced)
 *   packages/standalone/releases/<version>-<target>/berth   then renamed into place
 *   packages/standalone/current -> releases/<version>-<target>   flipped by renaming a new link over it
 *   $BERTH_INSTALL_DIR/berth -> $BERTH_HOME/packages/standalone/current/berth
 *
 * and adds the link's folder to PATH once. Everything that changes the
 * layout happens under install.lock; a failure before the flip leaves
 * `current` as it was, and the flip itself is one rename.
 *
 * `installRelease` and `flipCurrent` are the pieces the updater reuses with a
 * downloaded binary. Nothing here prints or exits: results and BerthErrors.
 *
 * Lock order: daemon.lock (the `install` command, as every mutating command)
 * before install.lock. The updater takes install.lock alone and only ever
 * *tries* daemon.lock after releasing it, so the two cannot deadlock.
 */
import {
  chmodSync,
  closeSync,
  copyFileSync,
  constants as fsConstants,
  fsyncSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { warn } from "../diagnostics.ts";
import { BerthError, describeError, errnoCode } from "../errors.ts";
import { bootstrap } from "../daemon/bootstrap.ts";
import { readStoredSettings, updateSettings } from "../daemon/settings.ts";
import { assertSupportedPlatform, openContext, prepareStateDirs, versionFromReleaseDir } from "../daemon/context.ts";
import { DAEMON_LOCK_WAIT_MS, withLock } from "../daemon/lock.ts";
import { createTemp, ensureSafeDir } from "../platform/fs.ts";
import { homeFrom, installLinkFrom, releaseDirName, type Layout, type Target } from "../platform/paths.ts";
import { BUILT_IN_BASE_URL, CLI_TARGET, CLI_VERSION, IS_COMPILED } from "../version.ts";
import { addPathBlock } from "./profile.ts";
import { compareVersions, isVersion } from "./semver.ts";

/** How long an install waits for another install or update to finish (spec: 75 s; BERTH_LOCK_WAIT_MS in tests). */
export const INSTALL_LOCK_WAIT_MS = DAEMON_LOCK_WAIT_MS;
/** The new binary must answer `--version` within this, or it is not installed. */
const VERIFY_TIMEOUT_MS = 20_000;
/** Releases kept besides `current`, newest first, for rollback. */
export const KEEP_PREVIOUS_RELEASES = 2;
const COMPARE_CHUNK_BYTES = 1 << 20;
const BINARY_MODE = 0o755;
const BINARY_NAME = "berth";
/**
 * Every berth executable contains this text (it is in this module). A regular
 * file at the command link's path is replaced only if it contains it too —
 * typically the downloaded berth the user ran `./berth install` from.
 */
export const BERTH_EXECUTABLE_MARKER = "berth-executable:7c1d5e0a";

// ---------------------------------------------------------------- pure decisions

/**
 * Pure: the release folders to delete. Always kept: `current` and `protect`
 * (the release being installed). Then up to `keepPrevious` others for
 * rollback: `previous` (what `current` pointed at before; an update rolls
 * back to it) first, then the newest by version. Names that are not release
 * folders are never touched. Oldest first.
 */
export function releasesToPrune(input: {
  releases: readonly string[];
  current: string | null;
  protect?: readonly string[];
  previous?: string | null;
  keepPrevious?: number;
}): string[] {
  const keepPrevious = input.keepPrevious ?? KEEP_PREVIOUS_RELEASES;
  const always = new Set([...(input.current ? [input.current] : []), ...(input.protect ?? [])]);
  const byNewest = input.releases
    .filter((name) => versionFromReleaseDir(name) !== undefined && !always.has(name))
    .sort((a, b) => compareVersions(versionFromReleaseDir(b) as string, versionFromReleaseDir(a) as string) || (a < b ? 1 : a > b ? -1 : 0));
  const kept = new Set<string>();
  if (input.previous && byNewest.includes(input.previous) && keepPrevious > 0) kept.add(input.previous);
  for (const name of byNewest) if (kept.size < keepPrevious) kept.add(name);
  return byNewest.filter((name) => !kept.has(name)).reverse();
}

export type ReleaseState = "missing" | "same" | "different";

/** Pure: nothing changed in the packages when the same bytes were already installed and current. */
export function installStatus(release: ReleaseState, currentBefore: string | null, name: string): "installed" | "alreadyInstalled" {
  return release === "same" && currentBefore === name ? "alreadyInstalled" : "installed";
}

export type LinkState =
  | { kind: "missing" }
  | { kind: "ours" }
  | { kind: "otherLink"; target: string }
  | { kind: "berthFile" }
  | { kind: "foreign"; what: "file" | "directory" | "other" };

export type LinkAction = "create" | "keep" | "replace" | "refuse";

/**
 * Pure: what to do with whatever sits at the command link's path. Symlinks
 * are ours to repoint (it is berth's name in berth's folder); a regular file
 * is replaced only if it is a berth executable; anything else is refused.
 */
export function linkAction(state: LinkState): LinkAction {
  switch (state.kind) {
    case "missing":
      return "create";
    case "ours":
      return "keep";
    case "otherLink":
    case "berthFile":
      return "replace";
    case "foreign":
      return "refuse";
  }
}

// ---------------------------------------------------------------- small I/O helpers

/** INSTALL_FAILED naming the step, the path and, for the common errnos, what to do. */
export function installFailure(action: string, path: string, error: unknown, after = ""): BerthError {
  if (error instanceof BerthError) return error;
  const code = errnoCode(error);
  const reason =
    code === "ENOSPC" || code === "EDQUOT"
      ? `no space left on the device (${code}); free some space and run the install again`
      : code === "EACCES" || code === "EPERM"
        ? `permission denied (${code}); check that you own ${dirname(path)} and can write to it`
        : code === "EROFS"
          ? `the file system is read-only (${code})`
          : describeError(error);
  return new BerthError("INSTALL_FAILED", `could not ${action} ${path}: ${reason}.${after ? ` ${after}` : ""}`, { cause: error });
}

/** Runs one step; any error becomes INSTALL_FAILED naming the step and path. */
function step<T>(action: string, path: string, run: () => T, after?: string): T {
  try {
    return run();
  } catch (error) {
    throw installFailure(action, path, error, after);
  }
}

function fsyncDir(path: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    fsyncSync(fd);
  } catch {
    // Not every platform lets a directory be fsynced; the renames are still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function readCurrent(layout: Layout): string | null {
  try {
    return basename(readlinkSync(layout.currentLink));
  } catch {
    return null;
  }
}

function isExecutableFile(path: string): boolean {
  try {
    const stat = statSync(path);
    return stat.isFile() && (stat.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** Chunked byte comparison; never loads a 100 MB binary twice into memory. */
export function sameContent(a: string, b: string): boolean {
  let fa: number | undefined;
  let fb: number | undefined;
  try {
    const sa = statSync(a);
    const sb = statSync(b);
    if (!sa.isFile() || !sb.isFile() || sa.size !== sb.size) return false;
    if (sa.dev === sb.dev && sa.ino === sb.ino) return true;
    fa = openSync(a, "r");
    fb = openSync(b, "r");
    const ba = Buffer.alloc(COMPARE_CHUNK_BYTES);
    const bb = Buffer.alloc(COMPARE_CHUNK_BYTES);
    for (;;) {
      const na = readSync(fa, ba, 0, COMPARE_CHUNK_BYTES, null);
      const nb = readSync(fb, bb, 0, COMPARE_CHUNK_BYTES, null);
      if (na !== nb) return false;
      if (na === 0) return true;
      if (!ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
    }
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return false;
    throw error;
  } finally {
    if (fa !== undefined) closeSync(fa);
    if (fb !== undefined) closeSync(fb);
  }
}

function fileContains(path: string, needle: string): boolean {
  const pattern = Buffer.from(needle);
  const chunk = Buffer.alloc(COMPARE_CHUNK_BYTES + pattern.length);
  const fd = openSync(path, "r");
  try {
    let carried = 0;
    for (;;) {
      const read = readSync(fd, chunk, carried, COMPARE_CHUNK_BYTES, null);
      if (read === 0) return false;
      const filled = carried + read;
      if (chunk.subarray(0, filled).includes(pattern)) return true;
      carried = Math.min(pattern.length - 1, filled);
      chunk.copy(chunk, 0, filled - carried, filled);
    }
  } finally {
    closeSync(fd);
  }
}

/** Replaces `path` with a symlink to `target` by renaming a freshly made link over it. */
function replaceWithSymlink(path: string, target: string): void {
  const { temp } = createTemp(path, (name) => symlinkSync(target, name));
  try {
    renameSync(temp, path);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
  fsyncDir(dirname(path));
}

/** Leftovers of a killed install: anything in staging, and temp links next to `current`. Needs install.lock. */
function removeStaleStaging(layout: Layout): string[] {
  const removed: string[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(layout.stagingDir);
  } catch {
    // no staging folder yet
  }
  for (const entry of entries) {
    rmSync(join(layout.stagingDir, entry), { recursive: true, force: true });
    removed.push(entry);
  }
  const tempPrefix = `${basename(layout.currentLink)}.tmp-`;
  for (const entry of readdirSync(layout.packagesDir)) {
    if (entry.startsWith(tempPrefix)) rmSync(join(layout.packagesDir, entry), { force: true });
  }
  return removed;
}

/** The new binary must run and say the version it is installed as. */
function verifyBinary(path: string, version: string, env: NodeJS.ProcessEnv): void {
  let output: { exitCode: number | null; stdout: string; stderr: string; timedOut: boolean };
  try {
    const result = Bun.spawnSync({
      cmd: [path, "--version"],
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      timeout: VERIFY_TIMEOUT_MS,
      env: { ...env, NO_COLOR: "1" },
      // Its own session: a hangup or ^C on the installing terminal must not kill the check half-way.
      detached: true,
    });
    output = {
      exitCode: result.exitCode,
      stdout: result.stdout.toString().trim(),
      stderr: result.stderr.toString().trim(),
      timedOut: result.exitedDueToTimeout === true,
    };
  } catch (error) {
    throw installFailure("run the new binary", path, error, "It was not installed; the previous release is still current.");
  }
  if (output.exitCode !== 0 || output.stdout !== version) {
    const what = output.timedOut
      ? `did not answer --version within ${VERIFY_TIMEOUT_MS / 1000} s`
      : output.exitCode !== 0
        ? `exited with status ${output.exitCode} on --version${output.stderr ? ` (${output.stderr.split("\n").at(-1)})` : ""}`
        : `says it is version ${JSON.stringify(output.stdout)}, not ${version}`;
    throw new BerthError(
      "INSTALL_FAILED",
      `the new binary ${path} ${what}; it was not installed and the previous release is still current. Check that the download is a berth ${version} for this machine.`,
    );
  }
}

// ---------------------------------------------------------------- the core, reused by the updater

export type InstallReleaseInput = {
  layout: Layout;
  /** The executable to install (the running berth, or a verified download). Copied, never moved. */
  sourcePath: string;
  version: string;
  target: Target;
  /** Run `<new binary> --version` before making it current (default true). */
  verify?: boolean;
  /** Environment for that check (default process.env). */
  env?: NodeJS.ProcessEnv;
};

export type ReleaseInstall = {
  status: "installed" | "alreadyInstalled";
  version: string;
  target: Target;
  /** `releases/<version>-<target>` folder name. */
  releaseName: string;
  releaseDir: string;
  managedBinaryPath: string;
  /** The release `current` pointed at before, if any. */
  previous: string | null;
  pruned: string[];
};

/** Takes install.lock (waits up to INSTALL_LOCK_WAIT_MS, then LOCK_TIMEOUT) around `action`. */
export async function withInstallLock<T>(layout: Layout, action: () => Promise<T> | T): Promise<T> {
  prepareInstallDirs(layout);
  return withLock(layout.installLock, INSTALL_LOCK_WAIT_MS, async () => action());
}

/** Creates (0700) and checks BERTH_HOME and the package folders; UNSAFE_STATE when one is not ours. */
export function prepareInstallDirs(layout: Layout): void {
  for (const dir of [layout.home, dirname(layout.packagesDir), layout.packagesDir, layout.releasesDir, layout.stagingDir]) {
    try {
      ensureSafeDir(dir);
    } catch (error) {
      throw installFailure("create the folder", dir, error);
    }
  }
}

/**
 * Installs `sourcePath` as release `<version>-<target>` and makes it current,
 * then prunes old releases. Takes install.lock itself; the caller must not
 * hold it. This is what the updater calls with a downloaded, verified binary.
 */
export async function installRelease(input: InstallReleaseInput): Promise<ReleaseInstall> {
  return withInstallLock(input.layout, () => installReleaseLocked(input));
}

/**
 * Points `current` at `releases/<name>` with one rename (for rollback).
 * The caller holds install.lock (see `withInstallLock`).
 */
export function flipCurrent(layout: Layout, name: string): void {
  const binary = join(layout.releasesDir, name, BINARY_NAME);
  if (!isExecutableFile(binary)) {
    throw new BerthError("INSTALL_FAILED", `cannot make ${name} current: ${binary} is missing or not executable; \`current\` was left as it was.`);
  }
  step(
    "point current at",
    layout.currentLink,
    () => replaceWithSymlink(layout.currentLink, join("releases", name)),
    `If ${layout.currentLink} is not a symlink, move it away and run the install again.`,
  );
}

function installReleaseLocked(input: InstallReleaseInput): ReleaseInstall {
  const { layout, sourcePath, version, target } = input;
  if (!isVersion(version)) throw new BerthError("INSTALL_FAILED", `"${version}" is not a release version like 1.4.0; nothing was installed.`);
  const name = releaseDirName(version, target);
  const releaseDir = join(layout.releasesDir, name);
  const releaseBinary = join(releaseDir, BINARY_NAME);
  const previous = readCurrent(layout);
  const keepCurrent = previous ? `\`current\` still points at ${previous}.` : "Nothing was installed.";

  step("clean up the staging folder", layout.stagingDir, () => removeStaleStaging(layout));
  step("read the binary to install", sourcePath, () => {
    const stat = statSync(sourcePath);
    if (!stat.isFile()) throw new Error("not a regular file");
  }, keepCurrent);

  const release: ReleaseState = step("compare with the installed release", releaseBinary, () =>
    sameContent(sourcePath, releaseBinary) ? "same" : statSync(releaseDir, { throwIfNoEntry: false }) ? "different" : "missing",
  );

  if (release === "same") {
    if (!isExecutableFile(releaseBinary)) step("make executable", releaseBinary, () => chmodSync(releaseBinary, BINARY_MODE));
  } else {
    const stage = step("create a staging folder in", layout.stagingDir, () => mkdtempSync(join(layout.stagingDir, "s-")));
    const staged = join(stage, BINARY_NAME);
    try {
      step("copy the binary to", staged, () => {
        copyFileSync(sourcePath, staged, fsConstants.COPYFILE_EXCL);
        chmodSync(staged, BINARY_MODE);
        const fd = openSync(staged, "r");
        try {
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }, keepCurrent);
      if (input.verify !== false) verifyBinary(staged, version, input.env ?? process.env);
      if (release === "missing") {
        step("move the new release to", releaseDir, () => renameSync(stage, releaseDir), keepCurrent);
      } else {
        // A rebuilt same version: replace the file inside the existing folder, one atomic rename.
        step("replace", releaseBinary, () => renameSync(staged, releaseBinary), keepCurrent);
      }
      fsyncDir(layout.releasesDir);
    } finally {
      rmSync(stage, { recursive: true, force: true });
    }
  }

  if (previous !== name) flipCurrent(layout, name);

  const pruned = releasesToPrune({
    releases: step("list", layout.releasesDir, () => readdirSync(layout.releasesDir)),
    current: name,
    protect: [name],
    previous,
  });
  for (const old of pruned) {
    const path = join(layout.releasesDir, old);
    try {
      rmSync(path, { recursive: true, force: true });
    } catch (error) {
      warn(`could not remove the old release ${path} (${errnoCode(error) ?? describeError(error)}); remove it yourself to free the space.`);
    }
  }

  return {
    status: installStatus(release, previous, name),
    version,
    target,
    releaseName: name,
    releaseDir,
    managedBinaryPath: layout.managedBinary,
    previous,
    pruned,
  };
}

// ---------------------------------------------------------------- the command link

function inspectLink(link: string, managedBinary: string): LinkState {
  const stat = lstatSync(link, { throwIfNoEntry: false });
  if (!stat) return { kind: "missing" };
  if (stat.isSymbolicLink()) {
    const target = readlinkSync(link);
    return target === managedBinary ? { kind: "ours" } : { kind: "otherLink", target };
  }
  if (stat.isFile()) return fileContains(link, BERTH_EXECUTABLE_MARKER) ? { kind: "berthFile" } : { kind: "foreign", what: "file" };
  return { kind: "foreign", what: stat.isDirectory() ? "directory" : "other" };
}

/** Before anything changes: refuse a command link path taken by something that is not berth's. */
function checkCommandLink(link: string, managedBinary: string): LinkState {
  const state = step("inspect", link, () => inspectLink(link, managedBinary));
  if (linkAction(state) === "refuse") {
    const what = state.kind === "foreign" ? state.what : "file";
    throw new BerthError(
      "INSTALL_FAILED",
      `${link} exists and is a ${what} that is not berth; nothing was installed. Move it away, or choose another folder with BERTH_INSTALL_DIR, and run the install again.`,
    );
  }
  return state;
}

/** Points the command link at the managed binary (absolute), with one rename. */
function ensureCommandLink(link: string, managedBinary: string, state: LinkState): void {
  const dir = dirname(link);
  step("create the folder", dir, () => mkdirSync(dir, { recursive: true }));
  // Temp links a killed install left next to ours.
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (entry.startsWith(`${basename(link)}.tmp-`) && lstatSync(path).isSymbolicLink()) rmSync(path, { force: true });
  }
  if (linkAction(state) === "keep") return;
  step("point the command link", link, () => replaceWithSymlink(link, managedBinary),
    `The release is installed; run ${managedBinary} directly, or fix ${dir} and run the install again.`);
  if (state.kind === "otherLink") warn(`${link} pointed at ${state.target}; it now points at ${managedBinary}.`);
}

// ---------------------------------------------------------------- `berth install`

export type InstallOptions = {
  bootstrap?: boolean;
  remoteControl?: boolean;
  /** false with --no-modify-path. */
  modifyPath?: boolean;
  env?: NodeJS.ProcessEnv;
};

export type InstallResult = {
  status: "installed" | "alreadyInstalled";
  version: string;
  target: Target;
  managedBinaryPath: string;
  releaseDir: string;
  commandLink: string;
  pathUpdated: boolean;
  profile?: string;
  /** Every profile that holds the block, when there is more than one (bash: ~/.bashrc and ~/.profile). */
  profiles?: string[];
  pruned: string[];
  cliVersion: string;
  bootstrap?: Awaited<ReturnType<typeof bootstrap>>;
};

/**
 * The file `install` copies: the running executable when compiled. From
 * source (tests) there is no single file to copy, so BERTH_INSTALL_SOURCE
 * names one.
 */
export function installSource(env: NodeJS.ProcessEnv): string {
  if (IS_COMPILED) return process.execPath;
  if (env.BERTH_INSTALL_SOURCE) return env.BERTH_INSTALL_SOURCE;
  throw new BerthError(
    "INSTALL_FAILED",
    "`berth install` installs the compiled berth binary it runs from, and this berth runs from source. Build one with `bun run build.ts` and run `dist/berth install`, or set BERTH_INSTALL_SOURCE to a berth binary.",
  );
}

/** `berth install`: the release, the command link, the PATH block; then the after-install hook. */
export async function install(options: InstallOptions = {}): Promise<InstallResult> {
  const env = options.env ?? process.env;
  assertSupportedPlatform();
  const target = CLI_TARGET;
  if (!target) throw new BerthError("UNSUPPORTED_PLATFORM", `berth has no release for ${process.platform}-${process.arch}; nothing was changed.`);
  const sourcePath = installSource(env);
  const ctx = openContext(env);
  const { layout } = ctx;
  const link = installLinkFrom(env);
  prepareInstallDirs(layout);
  step("create the state folders in", layout.home, () => prepareStateDirs(ctx));

  const installed = await withLock(layout.daemonLock, DAEMON_LOCK_WAIT_MS, () =>
    withInstallLock(layout, () => {
      const linkState = checkCommandLink(link, layout.managedBinary);
      const release = installReleaseLocked({ layout, sourcePath, version: CLI_VERSION, target, env });
      ensureCommandLink(link, layout.managedBinary, linkState);
      const path = options.modifyPath === false ? { pathUpdated: false } : addPathBlock({ dir: dirname(link), env, home: homeFrom(env) });
      if ("warning" in path && path.warning) warn(path.warning);
      return { release, path };
    }),
  );

  const result: InstallResult = {
    status: installed.release.status,
    version: installed.release.version,
    target: installed.release.target,
    managedBinaryPath: installed.release.managedBinaryPath,
    releaseDir: installed.release.releaseDir,
    commandLink: link,
    pathUpdated: installed.path.pathUpdated,
    ...("profile" in installed.path && installed.path.profile ? { profile: installed.path.profile } : {}),
    ...("profiles" in installed.path && installed.path.profiles ? { profiles: installed.path.profiles } : {}),
    pruned: installed.release.pruned,
    cliVersion: CLI_VERSION,
  };
  return { ...result, ...(await afterInstall({ bootstrap: options.bootstrap === true, ...(options.remoteControl !== undefined ? { remoteControl: options.remoteControl } : {}), env })) };
}

/** `remoteControl`: true (`--remote-control`) turns it on, false (`--no-remote-control`) off, undefined keeps it. */
export type AfterInstallOptions = { bootstrap: boolean; remoteControl?: boolean; env: NodeJS.ProcessEnv };

/**
 * After a successful install, with install.lock and daemon.lock released:
 * remember where releases come from (install.sh exports its base URL) so the
 * updater can find them, then `--bootstrap` runs the bootstrap command.
 */
export async function afterInstall(options: AfterInstallOptions): Promise<{ bootstrap?: Awaited<ReturnType<typeof bootstrap>> }> {
  const ctx = openContext(options.env);
  const baseUrl = options.env.BERTH_RELEASE_BASE_URL || BUILT_IN_BASE_URL;
  if (baseUrl && !readStoredSettings(ctx.layout.settingsFile).releaseBaseUrl) {
    updateSettings(ctx.layout.settingsFile, { releaseBaseUrl: baseUrl.replace(/\/+$/, "") }, options.env);
  }
  if (options.remoteControl !== undefined && !options.bootstrap) {
    const flag = options.remoteControl ? "--remote-control" : "--no-remote-control";
    warn(`${flag} takes effect with --bootstrap (or run \`berth bootstrap ${flag}\`).`);
  }
  if (!options.bootstrap) return {};
  return { bootstrap: await bootstrap(ctx, { ...(options.remoteControl !== undefined ? { remoteControl: options.remoteControl } : {}), autoUpdate: true }) };
}
