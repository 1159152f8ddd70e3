/** system/info: what machine the client is on (spec "System"). */
import { statfs } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { arch, cpus, freemem, homedir, hostname, loadavg, release, totalmem, uptime } from "node:os";
import { fsError } from "./fs-errors.ts";
import { params } from "./params.ts";
import { method, type ApiFamily } from "./types.ts";

/** The login shell field of `uid`'s line in passwd text, if it is an absolute path. */
export function shellFromPasswd(passwd: string, uid: number): string | undefined {
  for (const line of passwd.split("\n")) {
    const fields = line.split(":");
    if (fields.length >= 7 && fields[2] === String(uid) && fields[6]?.startsWith("/")) return fields[6];
  }
  return undefined;
}

/**
 * The user's login shell: $SHELL, else the passwd entry (Bun's userInfo().shell says "unknown"), else /bin/sh.
 * What system/info reports and what process/spawn runs (with -l) when given no argv.
 */
export function loginShell(): string {
  if (process.env.SHELL?.startsWith("/")) return process.env.SHELL;
  try {
    return shellFromPasswd(readFileSync("/etc/passwd", "utf8"), process.getuid?.() ?? -1) ?? "/bin/sh";
  } catch {
    return "/bin/sh";
  }
}

export async function systemInfo() {
  const home = homedir();
  let disk: { path: string; total: number; free: number };
  try {
    const fsStats = await statfs(home);
    disk = { path: home, total: fsStats.blocks * fsStats.bsize, free: fsStats.bavail * fsStats.bsize };
  } catch (error) {
    throw fsError(error, "reading disk space of", home);
  }
  return {
    hostname: hostname(),
    os: process.platform,
    release: release(),
    arch: arch(),
    cpus: cpus().length,
    loadavg: loadavg(),
    memory: { total: totalmem(), free: freemem() },
    uptimeS: Math.floor(uptime()),
    home,
    shell: loginShell(),
    disk,
  };
}

export function createSystemApi(): ApiFamily {
  return { methods: { "system/info": method(params({}), () => systemInfo()) } };
}
