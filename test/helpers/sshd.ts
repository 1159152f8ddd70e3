/**
 * A real OpenSSH server on loopback for the `berth remote` suites.
 *
 * Each `startSshd()` makes a temporary folder with a host key, a client key,
 * an authorized_keys file and an sshd_config, starts `sshd -D -e` on a free
 * 127.0.0.1 port (our child, stopped by pid), and writes a client config so a
 * test runs `BERTH_SSH="ssh -F <config>" berth remote <alias> …`.
 *
 * The far side logs in as the current user, but its HOME and BERTH_HOME are
 * temporary folders: the authorized key carries forced `environment=` options
 * (sshd: PermitUserEnvironment yes). StrictModes is off because the temporary
 * folders live under /tmp. The host key is pinned in a known_hosts file, so
 * the client checks it strictly, as a user's ssh would.
 *
 * When sshd cannot run here, `sshdUnavailable()` says why, and suites skip
 * with that reason printed — never silently.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, isAlive } from "./berth.ts";

const SSHD_CANDIDATES = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"];
/** sshd must accept TCP connections within this after spawn. */
const SSHD_READY_TIMEOUT_MS = 15_000;
const SSHD_STOP_GRACE_MS = 5_000;
const PORT_ATTEMPTS = 5;
/** The privilege-separation folder a root sshd insists on (the Debian unit creates it at boot). */
const PRIVSEP_DIR = "/run/sshd";

export const HOST_ALIAS = "berth-test-host";

export type SshHost = {
  /** The Host alias of the client config. */
  alias: string;
  port: number;
  /** `ssh -F <config>`: the value for BERTH_SSH. */
  sshCommand: string;
  configPath: string;
  /** The far side's HOME and BERTH_HOME. */
  farHome: string;
  farBerthHome: string;
  /** The far side's TMPDIR (inside `dir`, so nothing it leaves behind outlives stop()). */
  farTmp: string;
  /** The temporary folder holding everything above. */
  dir: string;
  sshdPid: number;
  /** Runs a command on the far side through the test's ssh config (stdin closed). */
  ssh(command: string, timeoutMs?: number): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Kills every process sshd started, then sshd; removes the folder. */
  stop(): Promise<void>;
};

export type StartOptions = {
  /** Extra variables forced on the far side (e.g. http_proxy to make downloads fail). */
  farEnv?: Record<string, string>;
  /** Lines appended to the far side's ~/.bashrc (shell start-up noise). */
  bashrc?: string;
};

/** The login name of this uid (os.userInfo() can say "unknown" without a USER variable). */
function currentUser(): string {
  const result = spawnSync("id", ["-un"], { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`id -un failed: ${result.stderr}`);
  return result.stdout.trim();
}

function findSshd(): string | undefined {
  return SSHD_CANDIDATES.find((path) => existsSync(path));
}

/**
 * Why sshd cannot run on this machine, or undefined when it can. Checked
 * once with `sshd -t` on a throwaway config, so a missing binary, a missing
 * privilege-separation folder we may not create, or a broken install all
 * end in a reason, not a hang.
 */
export function sshdUnavailable(): string | undefined {
  cachedReason ??= computeUnavailable() ?? "";
  return cachedReason || undefined;
}
let cachedReason: string | undefined;

function computeUnavailable(): string | undefined {
  const sshd = findSshd();
  if (!sshd) return `no sshd in ${SSHD_CANDIDATES.join(", ")} (install openssh-server; .ci/run does)`;
  for (const tool of ["ssh", "ssh-keygen"]) {
    if (!Bun.which(tool)) return `no ${tool} on PATH (install openssh-client; .ci/run does)`;
  }
  if (process.getuid?.() === 0 && !existsSync(PRIVSEP_DIR)) {
    try {
      mkdirSync(PRIVSEP_DIR, { mode: 0o755 });
    } catch (error) {
      return `sshd needs ${PRIVSEP_DIR} and it cannot be created: ${(error as Error).message}`;
    }
  }
  const dir = mkdtempSync(join(tmpdir(), "berth-sshd-check-"));
  try {
    const keygen = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "hostkey")], { encoding: "utf8" });
    if (keygen.status !== 0) return `ssh-keygen failed: ${keygen.stderr.trim()}`;
    writeFileSync(join(dir, "sshd_config"), sshdConfig({ dir, port: 22, authorizedKeys: join(dir, "authorized_keys") }));
    const check = spawnSync(sshd, ["-t", "-f", join(dir, "sshd_config")], { encoding: "utf8" });
    if (check.status !== 0) return `\`sshd -t\` rejects a minimal config: ${check.stderr.trim() || `exit ${check.status}`}`;
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function sshdConfig(o: { dir: string; port: number; authorizedKeys: string }): string {
  return [
    "ListenAddress 127.0.0.1",
    `Port ${o.port}`,
    `HostKey ${join(o.dir, "hostkey")}`,
    `PidFile ${join(o.dir, "sshd.pid")}`,
    `AuthorizedKeysFile ${o.authorizedKeys}`,
    "PermitRootLogin prohibit-password",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitUserEnvironment yes",
    "StrictModes no",
    "UsePAM no",
    "PrintMotd no",
    "LogLevel ERROR",
    "",
  ].join("\n");
}

/** A port nobody listens on right now (sshd may still lose a race for it; startSshd retries). */
export function freePort(): number {
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = listener.port;
  listener.stop(true);
  return port;
}

async function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(socket) {
          socket.end();
          resolve(true);
        },
        data() {},
        connectError: () => resolve(false),
        error: () => resolve(false),
      },
    }).catch(() => resolve(false));
  });
}

/** Every live descendant of `root` (by ppid in /proc), deepest first. */
export function descendantsOf(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    for (const child of children.get(pid) ?? []) {
      walk(child);
      out.push(child);
    }
  };
  walk(root);
  return out;
}

/** The ssh carrying `berth connect` among the descendants of a client process (to kill it: a dropped network). */
export function connectSshUnder(root: number): number | undefined {
  return descendantsOf(root).find((pid) => {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      return cmdline[0]?.endsWith("ssh") && cmdline.some((word) => word.includes("connect"));
    } catch {
      return false;
    }
  });
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

export async function startSshd(options: StartOptions = {}): Promise<SshHost> {
  const reason = sshdUnavailable();
  if (reason) throw new Error(`sshd cannot run here: ${reason}`);
  const sshd = findSshd() as string;
  const dir = mkdtempSync(join(tmpdir(), "berth-sshd-"));
  const farHome = join(dir, "far-home");
  const farBerthHome = join(farHome, ".berth");
  const farTmp = join(dir, "far-tmp");
  mkdirSync(farHome, { mode: 0o700 });
  mkdirSync(farTmp, { mode: 0o700 });
  const keygen = (file: string) => {
    const result = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "berth-test", "-f", join(dir, file)], { encoding: "utf8" });
    if (result.status !== 0) throw new Error(`ssh-keygen ${file}: ${result.stderr}`);
  };
  keygen("hostkey");
  keygen("userkey");
  const farEnv: Record<string, string> = { HOME: farHome, BERTH_HOME: farBerthHome, TMPDIR: farTmp, ...options.farEnv };
  const envOptions = Object.entries(farEnv).map(([key, value]) => `environment="${key}=${value}"`).join(",");
  const authorizedKeys = join(dir, "authorized_keys");
  writeFileSync(authorizedKeys, `${envOptions} ${readFileSync(join(dir, "userkey.pub"), "utf8")}`, { mode: 0o600 });
  if (options.bashrc) writeFileSync(join(farHome, ".bashrc"), `${options.bashrc}\n`);

  let port = 0;
  let child: ReturnType<typeof Bun.spawn> | undefined;
  let lastError = "";
  for (let attempt = 0; attempt < PORT_ATTEMPTS && !child; attempt += 1) {
    port = freePort();
    writeFileSync(join(dir, "sshd_config"), sshdConfig({ dir, port, authorizedKeys }));
    const started = Bun.spawn({ cmd: [sshd, "-D", "-e", "-f", join(dir, "sshd_config")], stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    const ready = await eventually(async () => started.exitCode !== null || (await acceptsConnections(port)), SSHD_READY_TIMEOUT_MS, 50);
    if (ready && started.exitCode === null) child = started;
    else {
      started.kill("SIGKILL");
      lastError = await new Response(started.stderr as ReadableStream).text();
    }
  }
  if (!child) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`sshd did not start on loopback: ${lastError.trim()}`);
  }
  const hostKey = readFileSync(join(dir, "hostkey.pub"), "utf8").split(" ").slice(0, 2).join(" ");
  writeFileSync(join(dir, "known_hosts"), `[127.0.0.1]:${port} ${hostKey}\n`);
  const configPath = join(dir, "ssh_config");
  writeFileSync(
    configPath,
    [
      `Host ${HOST_ALIAS}`,
      "  HostName 127.0.0.1",
      `  Port ${port}`,
      `  User ${currentUser()}`,
      `  IdentityFile ${join(dir, "userkey")}`,
      "  IdentitiesOnly yes",
      `  UserKnownHostsFile ${join(dir, "known_hosts")}`,
      "  StrictHostKeyChecking yes",
      "  BatchMode yes",
      "  LogLevel ERROR",
      "",
    ].join("\n"),
  );
  const sshdProcess = child;
  const sshCommand = `ssh -F ${configPath}`;
  return {
    alias: HOST_ALIAS,
    port,
    sshCommand,
    configPath,
    farHome,
    farBerthHome,
    farTmp,
    dir,
    sshdPid: sshdProcess.pid,
    async ssh(command, timeoutMs = 30_000) {
      const proc = Bun.spawn({ cmd: ["ssh", "-F", configPath, HOST_ALIAS, command], stdin: "ignore", stdout: "pipe", stderr: "pipe" });
      const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
      const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
      clearTimeout(timer);
      return { code, stdout, stderr };
    },
    async stop() {
      // The sessions sshd forked are its descendants: ours to end, deepest first.
      for (const pid of descendantsOf(sshdProcess.pid)) signal(pid, "SIGKILL");
      signal(sshdProcess.pid, "SIGTERM");
      if (!(await eventually(() => sshdProcess.exitCode !== null || !isAlive(sshdProcess.pid), SSHD_STOP_GRACE_MS))) {
        signal(sshdProcess.pid, "SIGKILL");
      }
      await sshdProcess.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
