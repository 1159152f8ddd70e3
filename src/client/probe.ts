/**
 * What `remote HOST bootstrap` learns about a host in one ssh round trip:
 * its target, whether berth is there and which version, and which download
 * tools it has. The script runs under `/bin/sh -c` with an explicit PATH,
 * so the host's start-up files are neither needed nor trusted (their noise
 * is skipped: only `berth-probe:` lines count). Parsing and the decisions
 * are pure and tested as tables.
 */
import { BerthError } from "../errors.ts";
import { compareVersions, isVersion } from "../install/semver.ts";
import type { Target } from "../platform/paths.ts";
import { REMOTE_BERTH_SCRIPT } from "./ssh.ts";

const PREFIX = "berth-probe:";
/** Where sh looks for tools on the host, whatever its start-up files say. */
export const REMOTE_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin:/opt/homebrew/bin";

/** One line of sh, no single quotes, no `!` (see shCommand). */
export const PROBE_SCRIPT = [
  `PATH=${REMOTE_PATH}:$PATH; export PATH`,
  `p() { printf "${PREFIX}%s=%s\\n" "$1" "$2"; }`,
  `p os "$(uname -s 2>/dev/null)"`,
  `p machine "$(uname -m 2>/dev/null)"`,
  `p ldd "$(ldd --version 2>&1 | head -n 1)"`,
  `for f in /lib/ld-musl-*.so.1; do [ -e "$f" ] && p muslLoader "$f"; done`,
  `p translated "$(sysctl -n sysctl.proc_translated 2>/dev/null)"`,
  `p home "$HOME"`,
  REMOTE_BERTH_SCRIPT,
  `if [ -x "$b" ]; then p berth "$b"; p version "$("$b" --version 2>/dev/null)"; fi`,
  `p curl "$(command -v curl)"`,
  `p wget "$(command -v wget)"`,
  `p done 1`,
].join("; ");

export type Probe = {
  os: string;
  machine: string;
  ldd: string;
  muslLoader: boolean;
  translated: boolean;
  home: string;
  /** Path of berth on the host, when installed. */
  berth?: string;
  /** Its `--version`, when it answered one. */
  version?: string;
  curl?: string;
  wget?: string;
};

/** Pure: the probe's `berth-probe:key=value` lines, ignoring everything else a shell printed (before them on a line too). */
export function parseProbe(stdout: string): Probe | undefined {
  const values = new Map<string, string>();
  let muslLoader = false;
  for (const raw of stdout.split("\n")) {
    // Start-up files may print without a final newline: their noise then opens the first probe line.
    const at = raw.indexOf(PREFIX);
    if (at < 0) continue;
    const line = raw.slice(at).replace(/\r$/, "");
    const [key, ...rest] = line.slice(PREFIX.length).split("=");
    const value = rest.join("=").trim();
    if (key === "muslLoader") muslLoader = true;
    else if (key) values.set(key, value);
  }
  if (values.get("done") !== "1") return undefined;
  const optional = (key: string) => (values.get(key) ? { [key]: values.get(key) } : {});
  const version = values.get("version");
  return {
    os: values.get("os") ?? "",
    machine: values.get("machine") ?? "",
    ldd: values.get("ldd") ?? "",
    muslLoader,
    translated: values.get("translated") === "1",
    home: values.get("home") ?? "",
    ...optional("berth"),
    ...(version && isVersion(version) ? { version } : {}),
    ...optional("curl"),
    ...optional("wget"),
  };
}

/** Pure: the release target of a probed host (the same rules as install.sh). */
export function targetOf(probe: Pick<Probe, "os" | "machine" | "ldd" | "muslLoader" | "translated">, host: string): Target {
  const os = probe.os === "Linux" ? "linux" : probe.os === "Darwin" ? "darwin" : undefined;
  const arch = /^(x86_64|amd64)$/.test(probe.machine) ? "x64" : /^(aarch64|arm64)$/.test(probe.machine) ? "arm64" : undefined;
  if (!os || !arch) {
    throw new BerthError("UNSUPPORTED_PLATFORM", `${host} is ${probe.os || "?"} ${probe.machine || "?"}; berth runs on Linux and macOS, x64 and arm64. Nothing was changed there.`);
  }
  if (os === "darwin") return probe.translated || arch === "arm64" ? "darwin-arm64" : "darwin-x64";
  const musl = /musl/i.test(probe.ldd) ? true : /glibc|gnu libc|gnu c library/i.test(probe.ldd) ? false : probe.muslLoader;
  return `linux-${arch}${musl ? "-musl" : ""}` as Target;
}

export type InstallPlan = { action: "none" } | { action: "install" | "update"; version?: string };

/**
 * Pure: what bootstrap does about the binary. Nothing when the host's berth
 * is at least the latest release (or the latest is unknown); otherwise
 * install it, or update an older one.
 */
export function planInstall(installed: string | undefined, latest: string | undefined): InstallPlan {
  if (installed === undefined) return latest ? { action: "install", version: latest } : { action: "install" };
  if (latest === undefined || compareVersions(installed, latest) >= 0) return { action: "none" };
  return { action: "update", version: latest };
}
