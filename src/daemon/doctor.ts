/**
 * `berth doctor`: checks the install end to end and reports one finding per
 * check, each failed one with the command that fixes it. Never fails itself:
 * a check that cannot run is a finding.
 */
import { existsSync, lstatSync, readdirSync, readlinkSync, realpathSync, statfsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { shQuote } from "../client/ssh.ts";
import { describeError, errnoCode, isBerthError } from "../errors.ts";
import { isSignedBy, trustedKeys } from "../update/signature.ts";
import { assertSafeDir, TEMP_NAME_PATTERN } from "../platform/fs.ts";
import { installLinkFrom, SOCKET_PATH_MAX_BYTES } from "../platform/paths.ts";
import { managedInstall, settingsOf, type Context } from "./context.ts";
import { readStoredSettings } from "./settings.ts";
import { checkSocketDir } from "./socket-dir.ts";
import { startupPresent, startupRecord } from "./startup.ts";
import { updaterReport } from "./updater.ts";
import { readWanted } from "./wanted.ts";

/** Each probe (the managed binary's --version, a login shell, the release host) gets this long. */
const PROBE_TIMEOUT_MS = 5_000;
/** A temp file this old is a killed writer's: a state write keeps its temp for milliseconds. */
export const LEFTOVER_TEMP_AGE_MS = 10 * 60_000;
/** sshd's default PATH for a non-interactive command (OpenSSH's _PATH_STDPATH plus /usr/local/bin). */
const SSH_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games";

export type Finding = { check: string; ok: boolean; message: string; fix?: string };
export type DoctorResult = { status: "ok" | "problems"; findings: Finding[] };

/** Pure: the overall verdict. */
export function summarize(findings: Finding[]): DoctorResult {
  return { status: findings.every((f) => f.ok) ? "ok" : "problems", findings };
}

const ok = (check: string, message: string): Finding => ({ check, ok: true, message });
const problem = (check: string, message: string, fix: string): Finding => ({ check, ok: false, message, fix });

function run(cmd: string[], env: Record<string, string>): { code: number; stdout: string; stderr: string } {
  try {
    const child = Bun.spawnSync({ cmd, env, stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: PROBE_TIMEOUT_MS });
    return { code: child.exitCode ?? 1, stdout: child.stdout.toString().trim(), stderr: child.stderr.toString().trim() };
  } catch (error) {
    return { code: 127, stdout: "", stderr: describeError(error) };
  }
}

function reinstallFix(ctx: Context): string {
  return `${ctx.layout.managedBinary} install`;
}

/** Would `ssh host berth` find it? A non-interactive shell as sshd starts it (bash then reads ~/.bashrc). */
function checkPath(ctx: Context): Finding {
  const shell = ctx.env.SHELL || "/bin/sh";
  const home = ctx.env.HOME ?? "";
  const env: Record<string, string> = { HOME: home, SHELL: shell, PATH: SSH_DEFAULT_PATH, SSH_CLIENT: "127.0.0.1 22 22", USER: ctx.env.USER ?? "" };
  if (ctx.env.ZDOTDIR) env.ZDOTDIR = ctx.env.ZDOTDIR;
  const found = run([shell, "-c", "command -v berth"], env);
  const link = installLinkFrom(ctx.env);
  if (found.code !== 0 || found.stdout === "") {
    return problem("path", `\`ssh host berth\` would not find berth: a non-interactive ${shell} does not have ${dirname(link)} on PATH`, reinstallFix(ctx));
  }
  const path = found.stdout.split("\n").pop() as string;
  return ok("path", `\`ssh host berth\` finds ${path}`);
}

function checkLink(ctx: Context): Finding {
  const link = installLinkFrom(ctx.env);
  try {
    if (!lstatSync(link).isSymbolicLink()) return problem("commandLink", `${link} is not a link to the managed binary`, `rm ${link} && ${reinstallFix(ctx)}`);
    const target = resolve(dirname(link), readlinkSync(link));
    if (target !== ctx.layout.managedBinary) return problem("commandLink", `${link} points at ${target}, not at ${ctx.layout.managedBinary}`, reinstallFix(ctx));
    realpathSync(link);
    return ok("commandLink", `${link} → ${target}`);
  } catch (error) {
    return problem("commandLink", `${link} is missing or broken (${describeError(error)})`, reinstallFix(ctx));
  }
}

function checkBinary(ctx: Context): Finding {
  const install = managedInstall(ctx);
  const result = run([install.binaryPath, "--version"], { ...(ctx.env as Record<string, string>), BERTH_HOME: ctx.layout.home });
  const fix = "curl -fsSL <release-base>/install.sh | sh";
  if (result.code !== 0) return problem("managedBinary", `${install.binaryPath} does not answer --version (exit ${result.code}${result.stderr ? `: ${result.stderr.split("\n").pop()}` : ""})`, fix);
  const answered = result.stdout.split("\n").pop() ?? "";
  if (install.version && answered !== install.version) return problem("managedBinary", `${install.binaryPath} says ${answered}, but current points at ${install.version}`, fix);
  return ok("managedBinary", `${install.binaryPath} answers --version: ${answered}`);
}

function checkFolders(ctx: Context): Finding[] {
  return [ctx.layout.home, ctx.layout.daemonDir, ctx.layout.packagesDir].map((dir) => {
    try {
      assertSafeDir(dir);
      return ok("folders", `${dir}: yours, mode ${(statSync(dir).mode & 0o777).toString(8)}`);
    } catch (error) {
      return problem("folders", describeError(error), `chown "$(id -u)" ${dir} && chmod 700 ${dir}`);
    }
  });
}

function checkSocket(ctx: Context): Finding {
  const limit = SOCKET_PATH_MAX_BYTES[process.platform] ?? 103;
  if (!ctx.socket.fallbackDir) return ok("socket", `${ctx.socket.path} (${Buffer.byteLength(ctx.socket.path)} of ${limit} bytes)`);
  try {
    // Never through a symlink; a folder someone else took is replaced by `start` (socket-dir.ts).
    checkSocketDir(ctx.socket);
    if (!existsSync(ctx.socket.fallbackDir)) return problem("socket", `socket fallback folder ${ctx.socket.fallbackDir} does not exist`, "berth start");
    return ok("socket", `${ctx.socket.path} (fallback: the path in BERTH_HOME is too long, or holds a character a ws+unix URL cannot carry)`);
  } catch (error) {
    return problem("socket", `socket fallback folder ${ctx.socket.fallbackDir}: ${describeError(error)}`, "berth restart");
  }
}

function checkSettings(ctx: Context): Finding {
  try {
    settingsOf(ctx);
    return ok("settings", `${ctx.layout.settingsFile} is valid`);
  } catch (error) {
    return problem("settings", describeError(error), `fix ${ctx.layout.settingsFile} by hand, or move it away to use defaults: mv ${ctx.layout.settingsFile} ${ctx.layout.settingsFile}.bad`);
  }
}

async function checkReleaseHost(ctx: Context): Promise<Finding[]> {
  let base = "";
  try {
    base = settingsOf(ctx).releaseBaseUrl;
  } catch {
    return [problem("releaseHost", "settings cannot be read, so the release host is unknown", "fix the settings first")];
  }
  if (!base) return [problem("releaseHost", "no release base URL is set: updates cannot be checked", `set releaseBaseUrl in ${ctx.layout.settingsFile}`)];
  const url = `${base.replace(/\/$/, "")}/latest.json`;
  const fix = `check the network, or releaseBaseUrl in ${ctx.layout.settingsFile}`;
  let bytes: Uint8Array;
  let signature: string | undefined;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    bytes = new Uint8Array(await response.arrayBuffer());
    const body = JSON.parse(Buffer.from(bytes).toString("utf8")) as { version?: unknown };
    if (!response.ok || typeof body.version !== "string") return [problem("releaseHost", `${url} answered ${response.status} without a version`, fix)];
    const sig = await fetch(`${url}.sig`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    signature = sig.ok ? await sig.text() : undefined;
  } catch (error) {
    return [problem("releaseHost", `${url} is not reachable: ${describeError(error)}`, fix)];
  }
  const found = [ok("releaseHost", `${url} is reachable`)];
  const keys = await trustedKeys();
  if (keys.length === 0) return [...found, problem("signatureKey", "this berth carries no release signing key: every update will be refused", "curl -fsSL <release-base>/install.sh | sh")];
  if (signature === undefined || !(await isSignedBy(bytes, signature, keys))) {
    return [...found, problem("signatureKey", `${url}.sig is missing or not signed by one of the ${keys.length} key(s) this berth trusts: updates will be refused`, fix)];
  }
  return [...found, ok("signatureKey", `${url} is signed by a key this berth trusts (${keys.length} trusted)`)];
}

function bootstrapFix(ctx: Context): string {
  try {
    return readStoredSettings(ctx.layout.settingsFile).autoUpdate === false ? "berth bootstrap --no-auto-update" : "berth bootstrap";
  } catch {
    return "berth bootstrap";
  }
}

function checkKeeper(ctx: Context): Finding[] {
  let wanted: "running" | "stopped" = "stopped";
  try {
    wanted = readWanted(ctx).appServer;
  } catch {
    // treated as not wanted
  }
  const report = updaterReport(ctx);
  const findings: Finding[] = [];
  if (report.state === "running") findings.push(ok("keeper", `the keeper runs (pid ${report.pid}, berth ${report.version ?? "unknown version"})`));
  else if (wanted === "running") findings.push(problem("keeper", "the app-server is wanted, but its keeper (the update loop) is not running: a crash would not be restarted", bootstrapFix(ctx)));
  else findings.push(ok("keeper", "not running, and not needed: the app-server is wanted stopped (`berth down` or `berth stop`)"));
  const check = report.lastCheck;
  if (check?.outcome === "failed") findings.push(problem("lastUpdateCheck", `the last update check (${check.at}) failed: ${check.message}`, "berth update"));
  else findings.push(ok("lastUpdateCheck", check ? `${check.at}: ${check.outcome}: ${check.message}` : "no update check yet"));
  return findings;
}

function checkStartup(ctx: Context): Finding[] {
  let record: ReturnType<typeof startupRecord>;
  try {
    record = startupRecord(ctx);
  } catch (error) {
    // A FIFO or a link where the record belongs: named, not followed (platform/fs.ts readStateFile).
    if (!isBerthError(error, "UNSAFE_STATE")) throw error;
    return [problem("startup", error.message, `rm ${ctx.layout.startupFile} && berth startup`)];
  }
  if (!record) return [problem("startup", "no startup entry: nothing comes back after a reboot", "berth startup")];
  if (!startupPresent(ctx, record)) return [problem("startup", `the recorded ${record.mechanism} entry is gone`, "berth startup --disable && berth startup")];
  const findings = [ok("startup", record.mechanism === "crontab" ? `crontab: ${record.line}` : `${record.mechanism}: ${record.file}`)];
  if (record.mechanism === "systemd") {
    const user = ctx.env.USER || ctx.env.LOGNAME || "";
    const linger = run(["loginctl", "show-user", user, "-p", "Linger", "--value"], ctx.env as Record<string, string>);
    if (linger.stdout !== "yes") findings.push(problem("linger", "lingering is off: systemd ends the keeper when you log out", `loginctl enable-linger ${user}`));
    else findings.push(ok("linger", "lingering is on"));
  }
  return findings;
}

/** Pure: the temp files among a state folder's entries that killed writers left (never removed by the writers: see createTemp). */
export function leftoverTemps(entries: Array<{ name: string; mtimeMs: number }>, nowMs: number): string[] {
  return entries.filter((e) => TEMP_NAME_PATTERN.test(e.name) && nowMs - e.mtimeMs >= LEFTOVER_TEMP_AGE_MS).map((e) => e.name).sort();
}

function checkLeftovers(ctx: Context): Finding {
  const dir = ctx.layout.daemonDir;
  try {
    // A temp gone between the listing and its lstat was a write in flight, renamed: not a leftover, not a failure.
    const temps = readdirSync(dir).flatMap((name) => {
      if (!TEMP_NAME_PATTERN.test(name)) return [];
      const stat = lstatSync(join(dir, name), { throwIfNoEntry: false });
      return stat ? [{ name, mtimeMs: stat.mtimeMs }] : [];
    });
    const left = leftoverTemps(temps, Date.now());
    if (left.length === 0) return ok("leftovers", `no temp files left by killed writers in ${dir}`);
    const paths = left.map((name) => join(dir, name));
    return problem("leftovers", `${left.length} temp file(s) left in ${dir} by writers killed mid-write (harmless, never reused): ${left.join(", ")}`, `rm -- ${paths.map(shQuote).join(" ")}`);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return ok("leftovers", `no state folder ${dir} yet`);
    return problem("leftovers", `cannot list ${dir}: ${describeError(error)}`, `chown "$(id -u)" ${dir} && chmod 700 ${dir}`);
  }
}

function checkDisk(ctx: Context): Finding {
  try {
    const fs = statfsSync(ctx.layout.packagesDir);
    const free = fs.bavail * fs.bsize;
    // One more release: a download next to the installed copy.
    const needed = 2 * statSync(ctx.layout.managedBinary).size;
    const mb = (n: number) => `${Math.round(n / 1_048_576)} MB`;
    if (free < needed) return problem("disk", `${mb(free)} free in ${ctx.layout.packagesDir}; one more release needs ${mb(needed)}`, `free ${mb(needed - free)} on that filesystem`);
    // Out of inodes, no file can be created (every state write, a release) while space remains; file systems
    // that do not count inodes report 0 of 0.
    if (fs.files > 0 && fs.ffree === 0) return problem("disk", `no free inodes in ${ctx.layout.packagesDir} (${mb(free)} free): no file can be created`, "remove files on that filesystem (`df -i` shows it)");
    return ok("disk", `${mb(free)} free in ${ctx.layout.packagesDir}`);
  } catch (error) {
    return problem("disk", `cannot measure free space: ${describeError(error)}`, reinstallFix(ctx));
  }
}

export async function doctor(ctx: Context): Promise<DoctorResult> {
  const findings: Finding[] = [
    checkPath(ctx),
    checkLink(ctx),
    checkBinary(ctx),
    ...checkFolders(ctx),
    checkSocket(ctx),
    checkSettings(ctx),
    ...(await checkReleaseHost(ctx)),
    ...checkKeeper(ctx),
    ...checkStartup(ctx),
    checkDisk(ctx),
    checkLeftovers(ctx),
  ];
  return summarize(findings);
}
