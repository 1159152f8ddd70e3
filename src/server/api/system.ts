/** system/info: what machine the client is on (spec "System"). */
import { statfs } from "node:fs/promises";
import { arch, cpus, freemem, homedir, hostname, loadavg, release, totalmem, uptime, userInfo } from "node:os";
import { fsError } from "./fs-errors.ts";
import { params } from "./params.ts";
import { method, type ApiFamily } from "./types.ts";

function loginShell(): string {
  if (process.env.SHELL) return process.env.SHELL;
  try {
    return userInfo().shell ?? "/bin/sh";
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
