/**
 * `berth install`: the release (release.ts), the command link (command-link.ts) and the PATH block
 * (profile.ts), then the after-install hook (`--bootstrap`).
 *
 * Lock order: daemon.lock (the `install` command, as every mutating command)
 * before install.lock. The updater takes install.lock alone and only ever
 * *tries* daemon.lock after releasing it, so the two cannot deadlock.
 */
import { dirname } from "node:path";
import { warn } from "../diagnostics.ts";
import { BerthError } from "../errors.ts";
import { bootstrap } from "../daemon/bootstrap.ts";
import { readStoredSettings, updateSettings } from "../daemon/settings.ts";
import { assertSupportedPlatform, openContext, prepareStateDirs } from "../daemon/context.ts";
import { DAEMON_LOCK_WAIT_MS, withLock } from "../daemon/lock.ts";
import { homeFrom, installLinkFrom, type Target } from "../platform/paths.ts";
import { BUILT_IN_BASE_URL, CLI_TARGET, CLI_VERSION, IS_COMPILED } from "../version.ts";
import { checkCommandLink, ensureCommandLink } from "./command-link.ts";
import { addPathBlock } from "./profile.ts";
import { installReleaseLocked, prepareInstallDirs, step, withInstallLock } from "./release.ts";

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
