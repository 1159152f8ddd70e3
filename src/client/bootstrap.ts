/**
 * `berth remote HOST bootstrap`: make berth run on a host that may have
 * nothing but sshd and /bin/sh.
 *
 *   1. one ssh master connection (ControlMaster), reused by every step below
 *   2. probe: target, installed berth and version, curl/wget   (probe.ts)
 *   3. compare with latest.json at the release base URL         (release.ts)
 *   4. install/update: the host downloads install.sh and runs it; when it
 *      cannot (no tool, download refused), the client uploads the binary for
 *      the host's target through ssh's stdin and runs `install` from it
 *   5. `berth bootstrap` on the host; its JSON is part of ours.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BerthError, type ErrorCode } from "../errors.ts";
import { planInstall, parseProbe, PROBE_SCRIPT, REMOTE_PATH, targetOf, type Probe } from "./probe.ts";
import { statusObjectText } from "./lines.ts";
import { isFileUrl, latestVersion, localBinary, releaseBaseUrl } from "./release.ts";
import { lastLine, remoteBerthCommand, runSsh, shCommand, shQuote, sshCommandWords, sshFailed, type SshOptions } from "./ssh.ts";

/** The master connection must be up (authentication included) within this. */
const MASTER_READY_TIMEOUT_MS = 60_000;
const MASTER_POLL_MS = 50;
const MASTER_STOP_GRACE_MS = 5_000;
/** install.sh (download + verify + install) and an upload of ~100 MB each get this long. */
const INSTALL_TIMEOUT_MS = 600_000;
/** Exit status of the host-download step when install.sh itself could not be fetched. */
const FETCH_FAILED_EXIT = 90;

export type BootstrapOptions = { remoteControl?: boolean; env?: NodeJS.ProcessEnv };

export type RemoteBootstrapResult = {
  status: "bootstrapped";
  host: string;
  target: string;
  /** What happened to the binary: nothing, a first install, or an update. */
  action: "alreadyInstalled" | "installed" | "updated";
  /** How the binary got there when it was installed: the host downloaded it, or we uploaded it. */
  method?: "download" | "upload";
  /** Why the host could not download, when we uploaded instead. */
  downloadError?: string;
  previousVersion: string | null;
  version: string | null;
  /** The host's own `berth bootstrap` object. */
  remote: Record<string, unknown>;
};

/** A ControlMaster ssh we started and stop by pid; every step runs through its socket. */
type Master = { sshOptions: string[]; close(): Promise<void> };

async function openMaster(host: string, env: NodeJS.ProcessEnv): Promise<Master> {
  const dir = mkdtempSync(join(tmpdir(), "berth-ssh-"));
  const controlPath = join(dir, "master");
  const [ssh, ...args] = sshCommandWords(env);
  const child = Bun.spawn({
    cmd: [ssh as string, ...args, "-o", "ControlMaster=yes", "-o", `ControlPath=${controlPath}`, "-o", "ControlPersist=no", "-N", "-T", "--", host],
    env: env as Record<string, string>,
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  const stderr = new Response(child.stderr).text();
  const close = async () => {
    if (child.exitCode === null) child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), MASTER_STOP_GRACE_MS);
    await child.exited;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + MASTER_READY_TIMEOUT_MS;
  while (!existsSync(controlPath)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await close();
      throw sshFailed(host, (await stderr) || (child.exitCode === null ? `no connection within ${MASTER_READY_TIMEOUT_MS} ms` : ""));
    }
    await Bun.sleep(MASTER_POLL_MS);
  }
  return { sshOptions: ["-o", "ControlMaster=no", "-o", `ControlPath=${controlPath}`], close };
}

/** Pure: the object a remote berth printed as its last JSON line, if any (shell noise before it on that line skipped). */
export function remoteResult(stdout: string): Record<string, unknown> | undefined {
  const lines = stdout.trimEnd().split("\n");
  for (let i = lines.length - 1; i >= 0; i -= 1) {
    for (const text of [lines[i] as string, statusObjectText(lines[i] as string)]) {
      if (text === undefined) continue;
      try {
        const value = JSON.parse(text);
        if (value && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
      } catch {
        // shell noise
      }
    }
  }
  return undefined;
}

const REMOTE_CODES = new Set<string>([
  "UNSUPPORTED_PLATFORM", "NOT_INSTALLED", "NOT_RUNNING", "NOT_MANAGED", "LOCK_TIMEOUT", "START_FAILED", "NOT_READY",
  "STOP_TIMEOUT", "STATE_CORRUPT", "UNSAFE_STATE", "DOWNLOAD_FAILED", "CHECKSUM_MISMATCH", "INSTALL_FAILED", "UPDATE_FAILED",
]);

/** Turns a failed remote berth command into a BerthError carrying the host's code and message. */
export function remoteFailure(host: string, step: string, result: { code: number; stdout: string; stderr: string }, fallback: ErrorCode): BerthError {
  const object = remoteResult(result.stdout) as { status?: string; error?: { code?: string; message?: string } } | undefined;
  const code = object?.error?.code && REMOTE_CODES.has(object.error.code) ? (object.error.code as ErrorCode) : fallback;
  const detail = object?.error?.message ?? (lastLine(result.stderr) || `exit status ${result.code}`);
  return new BerthError(code, `${step} on ${host} failed: ${detail}`);
}

async function probeHost(host: string, ssh: SshOptions): Promise<Probe> {
  const result = await runSsh(host, shCommand(PROBE_SCRIPT), ssh);
  const probe = parseProbe(result.stdout);
  if (!probe) throw new BerthError("SSH_FAILED", `probing ${host} with /bin/sh failed (exit ${result.code}): ${lastLine(result.stderr) || "no output"}. The host needs a POSIX /bin/sh.`);
  return probe;
}

/** The host fetches install.sh with its own curl/wget and runs it (which verifies and runs `install`). */
async function installByDownload(host: string, base: string, version: string | undefined, probe: Probe, ssh: SshOptions) {
  const url = shQuote(`${base}/install.sh`);
  const fetchCommand = probe.curl ? `curl -fsSL -o "$t/install.sh" ${url}` : `wget -q -O "$t/install.sh" ${url}`;
  const release = version ? ` --release ${shQuote(version)}` : "";
  const script = [
    `PATH=${REMOTE_PATH}:$PATH; export PATH; umask 077`,
    `t=$(mktemp -d "\${TMPDIR:-/tmp}/berth-install.XXXXXX") || exit 1`,
    `if ${fetchCommand}; then BERTH_RELEASE_BASE_URL=${shQuote(base)} sh "$t/install.sh"${release}; rc=$?; else rc=${FETCH_FAILED_EXIT}; fi`,
    `rm -rf "$t"; exit $rc`,
  ].join("; ");
  return runSsh(host, shCommand(script), { ...ssh, timeoutMs: INSTALL_TIMEOUT_MS });
}

/** Streams a local binary into a temporary file on the host over ssh's stdin, runs `install` from it, removes it. */
async function installByUpload(host: string, base: string, binary: string, ssh: SshOptions) {
  const baseEnv = isFileUrl(base) ? "" : `BERTH_RELEASE_BASE_URL=${shQuote(base)} `;
  const script = [
    `PATH=${REMOTE_PATH}:$PATH; export PATH; umask 077`,
    `d=$(mktemp -d "\${TMPDIR:-/tmp}/berth-upload.XXXXXX") || exit 1`,
    `if cat > "$d/berth" && chmod 700 "$d/berth"; then ${baseEnv}"$d/berth" install; rc=$?; else rc=1; fi`,
    `rm -rf "$d"; exit $rc`,
  ].join("; ");
  return runSsh(host, shCommand(script), { ...ssh, stdin: Bun.file(binary), timeoutMs: INSTALL_TIMEOUT_MS });
}

/** Installs or updates berth on the host; returns how. */
async function installOnHost(host: string, base: string, version: string | undefined, probe: Probe, ssh: SshOptions, env: NodeJS.ProcessEnv) {
  let downloadError: string | undefined;
  // A file:// release lives on this machine: the host cannot read it, so it is uploaded.
  if (!isFileUrl(base) && (probe.curl || probe.wget)) {
    const result = await installByDownload(host, base, version, probe, ssh);
    if (result.code === 0) return { method: "download" as const };
    downloadError =
      result.code === FETCH_FAILED_EXIT
        ? `the host could not fetch ${base}/install.sh: ${lastLine(result.stderr) || "download failed"}`
        : remoteFailure(host, "install.sh", result, "INSTALL_FAILED").message;
  } else if (!isFileUrl(base)) downloadError = `${host} has neither curl nor wget`;
  if (!version) {
    throw new BerthError("DOWNLOAD_FAILED", `${downloadError ?? "the host cannot download"}, and ${base}/latest.json cannot be read from this machine either, so there is nothing to upload.`);
  }
  const binary = await localBinary(base, version, targetOf(probe, host), env);
  const result = await installByUpload(host, base, binary, ssh);
  if (result.code !== 0) throw remoteFailure(host, "installing the uploaded berth", result, "INSTALL_FAILED");
  return { method: "upload" as const, ...(downloadError ? { downloadError } : {}) };
}

/** The whole of `remote HOST bootstrap`. */
export async function remoteBootstrap(host: string, options: BootstrapOptions = {}): Promise<RemoteBootstrapResult> {
  const env = options.env ?? process.env;
  const base = releaseBaseUrl(env);
  const master = await openMaster(host, env);
  try {
    const ssh: SshOptions = { env, sshOptions: master.sshOptions };
    const [probe, latest] = await Promise.all([probeHost(host, ssh), latestVersion(base)]);
    const target = targetOf(probe, host);
    const plan = planInstall(probe.version, latest);
    let installed: { method: "download" | "upload"; downloadError?: string } | undefined;
    if (plan.action !== "none") installed = await installOnHost(host, base, plan.version, probe, ssh, env);
    const result = await runSsh(host, remoteBerthCommand(["bootstrap", ...(options.remoteControl ? ["--remote-control"] : [])]), ssh);
    const remote = remoteResult(result.stdout);
    if (result.code === 127 && !remote) throw new BerthError("NOT_INSTALLED", `berth is still missing on ${host} after installing it: ${lastLine(result.stderr)}`);
    if (result.code !== 0 || remote?.status !== "bootstrapped") throw remoteFailure(host, "berth bootstrap", result, "START_FAILED");
    return {
      status: "bootstrapped",
      host,
      target,
      action: plan.action === "none" ? "alreadyInstalled" : plan.action === "update" ? "updated" : "installed",
      ...(installed ?? {}),
      previousVersion: probe.version ?? null,
      version: typeof remote.managedVersion === "string" ? remote.managedVersion : null,
      remote,
    };
  } finally {
    await master.close();
  }
}
