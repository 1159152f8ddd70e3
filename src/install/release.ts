/**
 * Installing one release into the managed layout
 *
 *   packages/standalone/staging/<random>/berth   copied here first (0755, fsynced)
 *   packages/standalone/releases/<version>-<target>/berth   then renamed into place
 *   packages/standalone/current -> releases/<version>-<target>   flipped by renaming a new link over it
 *
 * Everything that changes the layout happens under install.lock; a failure before the flip leaves
 * `current` as it was, and the flip itself is one rename. `installRelease` and `flipCurrent` are what
 * the updater reuses with a downloaded binary; `berth install` (install.ts) adds the command link and
 * the PATH block. Nothing here prints or exits: results and BerthErrors.
 */
import {
  chmodSync,
  closeSync,
  copyFileSync,
  constants as fsConstants,
  fsyncSync,
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
import { DAEMON_LOCK_WAIT_MS, withLock } from "../daemon/lock.ts";
import { createTemp, ensureSafeDir } from "../platform/fs.ts";
import { releaseDirName, type Layout, type Target } from "../platform/paths.ts";
import { installStatus, releasesToPrune, type ReleaseState } from "./decisions.ts";
import { isVersion } from "./semver.ts";

/** How long an install waits for another install or update to finish (spec: 75 s; BERTH_LOCK_WAIT_MS in tests). */
export const INSTALL_LOCK_WAIT_MS = DAEMON_LOCK_WAIT_MS;
/** The new binary must answer `--version` within this, or it is not installed. */
const VERIFY_TIMEOUT_MS = 20_000;
/** Chunk size of the byte comparisons: a 100 MB binary is never read into memory whole. */
export const COMPARE_CHUNK_BYTES = 1 << 20;
const BINARY_MODE = 0o755;
const BINARY_NAME = "berth";


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
export function step<T>(action: string, path: string, run: () => T, after?: string): T {
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

/** Replaces `path` with a symlink to `target` by renaming a freshly made link over it. */
export function replaceWithSymlink(path: string, target: string): void {
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

export function installReleaseLocked(input: InstallReleaseInput): ReleaseInstall {
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
