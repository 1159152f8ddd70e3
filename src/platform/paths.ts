/** Where everything lives. Pure path arithmetic; nothing here touches the disk. */
import { isAbsolute, join, resolve } from "node:path";

/**
 * node:os only when HOME is unset: every command computes these paths, and
 * loading node:os cost 0.06-0.3 ms per command in CPU profiles of the
 * compiled version/status/start/stop.
 */
function homedir(): string {
  return (require("node:os") as typeof import("node:os")).homedir();
}

export const TARGETS = [
  "linux-x64",
  "linux-arm64",
  "linux-x64-musl",
  "linux-arm64-musl",
  "darwin-x64",
  "darwin-arm64",
] as const;
export type Target = (typeof TARGETS)[number];

export function isTarget(value: string): value is Target {
  return (TARGETS as readonly string[]).includes(value);
}

/** Longest socket path (bytes, without the NUL) a client on each platform can connect to. */
export const SOCKET_PATH_MAX_BYTES: Record<string, number> = { linux: 107, darwin: 103 };

export type Layout = ReturnType<typeof layoutFor>;

/**
 * The user's home folder: HOME, else the password database's. A relative HOME
 * (a script's `HOME=. berth start`) is taken from the current folder, as a
 * relative BERTH_HOME is: every path berth derives, records and hands to its
 * daemons (which run elsewhere) must be absolute.
 */
export function homeFrom(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.HOME || homedir());
}

export function berthHomeFrom(env: NodeJS.ProcessEnv = process.env): string {
  const configured = env.BERTH_HOME;
  if (configured) return isAbsolute(configured) ? resolve(configured) : resolve(process.cwd(), configured);
  return join(homeFrom(env), ".berth");
}

export function installLinkFrom(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.BERTH_INSTALL_DIR || join(homeFrom(env), ".local", "bin");
  return join(resolve(dir), "berth");
}

export function layoutFor(home: string) {
  const packagesDir = join(home, "packages", "standalone");
  const daemonDir = join(home, "daemon");
  return {
    home,
    packagesDir,
    releasesDir: join(packagesDir, "releases"),
    stagingDir: join(packagesDir, "staging"),
    currentLink: join(packagesDir, "current"),
    managedBinary: join(packagesDir, "current", "berth"),
    installLock: join(packagesDir, "install.lock"),
    daemonDir,
    settingsFile: join(daemonDir, "settings.json"),
    daemonLock: join(daemonDir, "daemon.lock"),
    appServerPid: join(daemonDir, "app-server.pid"),
    appServerLog: join(daemonDir, "app-server.log"),
    appServerShutdown: join(daemonDir, "app-server.shutdown.json"),
    updaterPid: join(daemonDir, "updater.pid"),
    updaterLog: join(daemonDir, "updater.log"),
    updaterState: join(daemonDir, "updater-state.json"),
    wantedFile: join(daemonDir, "wanted.json"),
    keeperState: join(daemonDir, "keeper.json"),
    startupFile: join(daemonDir, "startup.json"),
    defaultSocket: join(daemonDir, SOCKET_FILE_NAME),
    /** The socket's fallback folder in use, when there is one (src/daemon/socket-dir.ts). */
    socketDirFile: join(daemonDir, "socket-dir"),
    tokenFile: join(daemonDir, "remote-control.token"),
  };
}

export function releaseDirName(version: string, target: Target): string {
  return `${version}-${target}`;
}

export type SocketPlan = { path: string; fallbackDir?: string };

export const SOCKET_FILE_NAME = "app-server.sock";
/** What mkdtemp adds to a fallback folder's name when someone else holds that name (src/daemon/socket-dir.ts). */
export const SOCKET_DIR_SUFFIX = "-XXXXXX";

/**
 * Pure: whether every client can put `path` in a ws+unix URL as it is: only
 * characters a URL path carries unchanged (RFC 3986 unreserved, sub-delims,
 * '@', '/'). Not ':' (it ends the host part), nor what a URL would
 * percent-encode or cut: a space, '"', '#', '?', '%', non-ASCII (a home like
 * /home/josé), controls; Bun then connects to another path, and never answers.
 */
export function urlSafePath(path: string): boolean {
  return /^[A-Za-z0-9\-._~!$&'()*+,;=@/]*$/.test(path);
}

/**
 * The control socket path: inside BERTH_HOME unless that path is too long for
 * clients on this platform or is not urlSafePath (e.g. holds ':'); then a
 * short per-user folder keyed by a hash of BERTH_HOME (in /tmp when
 * XDG_RUNTIME_DIR is not URL-safe either, or too long). Which folder is in
 * use, when someone else took this one, is src/daemon/socket-dir.ts's.
 */
export function socketPlan(input: {
  home: string;
  platform: string;
  uid: number;
  runtimeDir?: string;
}): SocketPlan {
  const preferred = join(input.home, "daemon", SOCKET_FILE_NAME);
  const limit = SOCKET_PATH_MAX_BYTES[input.platform] ?? 103;
  if (Buffer.byteLength(preferred) <= limit && urlSafePath(preferred)) return { path: preferred };
  const hash = new Bun.CryptoHasher("sha256").update(input.home).digest("hex").slice(0, 8);
  const name = `berth-${input.uid}-${hash}`;
  // The runtime folder only while the socket fits there, also in a folder with mkdtemp's suffix.
  const fits = (dir: string) => Buffer.byteLength(join(dir, `${name}${SOCKET_DIR_SUFFIX}`, SOCKET_FILE_NAME)) <= limit;
  const runtimeDir = input.runtimeDir;
  const base = runtimeDir && isAbsolute(runtimeDir) && urlSafePath(runtimeDir) && fits(runtimeDir) ? runtimeDir : "/tmp";
  const fallbackDir = join(base, name);
  return { path: join(fallbackDir, SOCKET_FILE_NAME), fallbackDir };
}

export function socketPlanFor(home: string, env: NodeJS.ProcessEnv = process.env): SocketPlan {
  return socketPlan({
    home,
    platform: process.platform,
    uid: process.getuid?.() ?? 0,
    runtimeDir: env.XDG_RUNTIME_DIR,
  });
}
