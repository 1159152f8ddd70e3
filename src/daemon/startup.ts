/**
 * `berth startup [--disable]`: makes the keeper (and so the app-server) come
 * back after a reboot or logout. A systemd user unit where `systemctl --user`
 * works (and systemd runs the managed binary's path: systemdCanRun), a
 * LaunchAgent on macOS, else a marked `@reboot` crontab line. What
 * was added is recorded in `daemon/startup.json`, so `--disable` (and
 * `uninstall`) remove exactly that. The entry runs the hidden `berth keep`,
 * which launches the keeper through the pidfile like every other launch.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { BerthError } from "../errors.ts";
import { readStateFile, writeFileAtomic } from "../platform/fs.ts";
import { assertManagedBinary, type Context } from "./context.ts";

/** Each external tool (systemctl, crontab, loginctl) gets this long. */
const TOOL_TIMEOUT_MS = 10_000;
const CRON_MARK = "# berth-startup";

export type StartupRecord =
  | { mechanism: "systemd"; file: string; unit: string }
  | { mechanism: "launchd"; file: string; label: string }
  | { mechanism: "crontab"; line: string };

export type StartupResult = {
  status: "enabled" | "alreadyEnabled" | "disabled" | "alreadyDisabled";
  mechanism: StartupRecord["mechanism"] | null;
  file?: string;
  line?: string;
  linger?: boolean | null;
  lingerCommand?: string;
};

/** Pure: a name unique per BERTH_HOME. */
export function entryId(home: string): string {
  return new Bun.CryptoHasher("sha256").update(home).digest("hex").slice(0, 8);
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * Pure: the marked crontab line for this BERTH_HOME. cron runs it with
 * SHELL=/bin/sh, which the keeper and the app-server would inherit: the
 * user's own $SHELL (absolute; no `%`, which cron turns into a newline) is
 * passed on, so a terminal spawned after a reboot is still their login shell.
 */
export function cronLine(home: string, binary: string, shell?: string): string {
  const userShell = shell?.startsWith("/") && !/[%\n]/.test(shell) ? `SHELL=${shellQuote(shell)} ` : "";
  return `@reboot ${userShell}BERTH_HOME=${cronEscape(shellQuote(home))} ${cronEscape(shellQuote(binary))} keep >/dev/null 2>&1 ${CRON_MARK} ${entryId(home)}`;
}

/** cron turns every unescaped '%' of a command into a newline (crontab(5)); `\%` stays a '%'. */
function cronEscape(text: string): string {
  return text.replace(/%/g, "\\%");
}

/**
 * systemd expands '%' specifiers in a unit's values (the program's path included): `%%` is a '%'. Quoted as
 * JSON, which systemd unquotes with the same C escapes (a newline stays inside its value). `$VAR` is expanded
 * only in ExecStart's arguments, never in its program (systemd.service(5)): there `$$` would stay two
 * characters, a path that does not exist; the one argument, `keep`, holds none.
 */
function systemdValue(text: string): string {
  return JSON.stringify(text).replace(/%/g, "%%");
}

/** Pure: the crontab without this home's line (other lines, including other berth homes', kept). */
export function withoutCronLine(table: string, home: string): string {
  const mark = `${CRON_MARK} ${entryId(home)}`;
  return table
    .split("\n")
    .filter((line) => !line.trimEnd().endsWith(mark))
    .join("\n");
}

/**
 * Pure: whether systemd runs a program at `path`: it refuses one holding a control character, a quote or a
 * backslash ("Executable name contains special characters"), however it is quoted. Then cron runs it instead.
 */
export function systemdCanRun(path: string): boolean {
  return !/[\x00-\x1f\x7f"'\\]/.test(path);
}

/** Pure: the systemd user unit. Oneshot: `keep` launches the detached keeper and exits; the keeper stays. */
export function systemdUnit(home: string, binary: string): string {
  return [
    `# Written by \`berth startup\` for BERTH_HOME=${JSON.stringify(home)}; remove with \`berth startup --disable\`.`,
    "[Unit]",
    `Description=berth keeper for ${systemdValue(home).slice(1, -1)}`,
    "",
    "[Service]",
    "Type=oneshot",
    "RemainAfterExit=yes",
    "KillMode=process",
    `Environment=${systemdValue(`BERTH_HOME=${home}`)}`,
    `ExecStart=${systemdValue(binary)} keep`,
    "",
    "[Install]",
    "WantedBy=default.target",
    "",
  ].join("\n");
}

function xmlEscape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function launchAgent(label: string, home: string, binary: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>${xmlEscape(label)}</string>
  <key>ProgramArguments</key><array><string>${xmlEscape(binary)}</string><string>keep</string></array>
  <key>EnvironmentVariables</key><dict><key>BERTH_HOME</key><string>${xmlEscape(home)}</string></dict>
  <key>RunAtLoad</key><true/>
</dict>
</plist>
`;
}

type ToolResult = { code: number; stdout: string; stderr: string };

function tool(cmd: string[], env: NodeJS.ProcessEnv, stdin?: string): ToolResult {
  try {
    const child = Bun.spawnSync({ cmd, env: env as Record<string, string>, stdin: stdin === undefined ? "ignore" : Buffer.from(stdin), stdout: "pipe", stderr: "pipe", timeout: TOOL_TIMEOUT_MS });
    return { code: child.exitCode ?? 1, stdout: child.stdout.toString(), stderr: child.stderr.toString() };
  } catch (error) {
    return { code: 127, stdout: "", stderr: (error as Error).message };
  }
}

/** Missing or damaged: no record. Not a plain file (a FIFO, a link): UNSAFE_STATE naming it, never a hang. */
function readRecord(ctx: Context): StartupRecord | undefined {
  const text = readStateFile(ctx.layout.startupFile);
  if (text === undefined) return undefined;
  try {
    const record = JSON.parse(text) as StartupRecord | null;
    return typeof record === "object" && record !== null ? record : undefined;
  } catch {
    return undefined;
  }
}

function userName(env: NodeJS.ProcessEnv): string {
  return env.USER || env.LOGNAME || userInfo().username;
}

/** Whether logind keeps this user's manager (and so the keeper) after logout; null when unknown. */
function lingerOf(env: NodeJS.ProcessEnv): boolean | null {
  const result = tool(["loginctl", "show-user", userName(env), "-p", "Linger", "--value"], env);
  if (result.code !== 0) return null;
  return result.stdout.trim() === "yes";
}

export function systemdUserWorks(env: NodeJS.ProcessEnv): boolean {
  return tool(["systemctl", "--user", "show-environment"], env).code === 0;
}

function describe(record: StartupRecord): Pick<StartupResult, "mechanism" | "file" | "line"> {
  return record.mechanism === "crontab" ? { mechanism: "crontab", line: record.line } : { mechanism: record.mechanism, file: record.file };
}

function failed(what: string, result: ToolResult): BerthError {
  return new BerthError("INSTALL_FAILED", `${what} failed (exit ${result.code}): ${result.stderr.trim().split("\n").pop() ?? ""}. Nothing else was changed.`);
}

function enableCrontab(ctx: Context): StartupRecord {
  if (!Bun.which("crontab", { PATH: ctx.env.PATH ?? "" })) {
    throw new BerthError(
      "INSTALL_FAILED",
      "neither a systemd user session (`systemctl --user`) nor `crontab` is available here, so nothing can bring the keeper back after a reboot. " +
        "Install cron (the `cron` or `cronie` package), or log in with a systemd user session, then run `berth startup` again. Nothing was changed.",
    );
  }
  if (ctx.layout.home.includes("\n")) {
    throw new BerthError(
      "INSTALL_FAILED",
      `BERTH_HOME (${JSON.stringify(ctx.layout.home)}) holds a newline, which no crontab line can carry, so nothing could bring the keeper back after a reboot. Use a BERTH_HOME without one, or a systemd user session. Nothing was changed.`,
    );
  }
  const line = cronLine(ctx.layout.home, ctx.layout.managedBinary, ctx.env.SHELL);
  const listed = tool(["crontab", "-l"], ctx.env);
  // `crontab -l` exits 1 with "no crontab for user": an empty table.
  const table = listed.code === 0 ? listed.stdout : "";
  const kept = withoutCronLine(table, ctx.layout.home).replace(/\n*$/, "");
  const written = tool(["crontab", "-"], ctx.env, `${kept === "" ? "" : `${kept}\n`}${line}\n`);
  if (written.code !== 0) throw failed("crontab -", written);
  return { mechanism: "crontab", line };
}

function enableSystemd(ctx: Context): StartupRecord {
  const unit = `berth-${entryId(ctx.layout.home)}.service`;
  const dir = join(ctx.env.XDG_CONFIG_HOME || join(ctx.env.HOME || userInfo().homedir, ".config"), "systemd", "user");
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = join(dir, unit);
  writeFileAtomic(file, systemdUnit(ctx.layout.home, ctx.layout.managedBinary), 0o644);
  for (const args of [["daemon-reload"], ["enable", unit]]) {
    const result = tool(["systemctl", "--user", ...args], ctx.env);
    if (result.code !== 0) {
      rmSync(file, { force: true });
      throw failed(`systemctl --user ${args.join(" ")}`, result);
    }
  }
  return { mechanism: "systemd", file, unit };
}

function enableLaunchd(ctx: Context): StartupRecord {
  const label = `dev.berth.keeper.${entryId(ctx.layout.home)}`;
  const dir = join(ctx.env.HOME || userInfo().homedir, "Library", "LaunchAgents");
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = join(dir, `${label}.plist`);
  writeFileAtomic(file, launchAgent(label, ctx.layout.home, ctx.layout.managedBinary), 0o644);
  return { mechanism: "launchd", file, label };
}

export function enableStartup(ctx: Context): StartupResult {
  assertManagedBinary(ctx);
  const existing = readRecord(ctx);
  const linger = () => {
    const on = lingerOf(ctx.env);
    return { linger: on, ...(on === false ? { lingerCommand: `loginctl enable-linger ${userName(ctx.env)}` } : {}) };
  };
  if (existing && startupPresent(ctx, existing)) {
    if (asWrittenNow(ctx, existing)) return { status: "alreadyEnabled", ...describe(existing), ...(existing.mechanism === "systemd" ? linger() : {}) };
    // Written wrong by an earlier berth: removed exactly, then made anew (possibly by another mechanism).
    disableStartup(ctx);
  }
  const systemd = () => systemdCanRun(ctx.layout.managedBinary) && systemdUserWorks(ctx.env);
  const record = process.platform === "darwin" ? enableLaunchd(ctx) : systemd() ? enableSystemd(ctx) : enableCrontab(ctx);
  writeFileAtomic(ctx.layout.startupFile, `${JSON.stringify(record)}\n`);
  return { status: "enabled", ...describe(record), ...(record.mechanism === "systemd" ? linger() : {}) };
}

/**
 * Whether a unit or agent file holds what this berth writes: one an earlier berth wrote wrong (its ExecStart
 * with `$$` for a home holding '$') is written again by `startup`, not reported as already enabled.
 */
function asWrittenNow(ctx: Context, record: StartupRecord): boolean {
  if (record.mechanism === "crontab") return true;
  if (record.mechanism === "systemd" && !systemdCanRun(ctx.layout.managedBinary)) return false;
  const expected = record.mechanism === "systemd" ? systemdUnit(ctx.layout.home, ctx.layout.managedBinary) : launchAgent(record.label, ctx.layout.home, ctx.layout.managedBinary);
  try {
    return readFileSync(record.file, "utf8") === expected;
  } catch {
    return false;
  }
}

/** Whether the recorded entry is still in place. */
export function startupPresent(ctx: Context, record: StartupRecord | undefined = readRecord(ctx)): boolean {
  if (!record) return false;
  if (record.mechanism !== "crontab") return existsSync(record.file);
  const listed = tool(["crontab", "-l"], ctx.env);
  return listed.code === 0 && listed.stdout.split("\n").includes(record.line);
}

export function startupRecord(ctx: Context): StartupRecord | undefined {
  return readRecord(ctx);
}

/** Removes exactly what `enableStartup` added; returns what it removed. */
export function disableStartup(ctx: Context): StartupResult & { removed: string[] } {
  const record = readRecord(ctx);
  if (!record) return { status: "alreadyDisabled", mechanism: null, removed: [] };
  const removed: string[] = [];
  if (record.mechanism === "crontab") {
    const listed = tool(["crontab", "-l"], ctx.env);
    if (listed.code === 0 && listed.stdout.split("\n").includes(record.line)) {
      const written = tool(["crontab", "-"], ctx.env, withoutCronLine(listed.stdout, ctx.layout.home));
      if (written.code !== 0) throw failed("crontab -", written);
      removed.push(`crontab: ${record.line}`);
    }
  } else {
    if (record.mechanism === "systemd") tool(["systemctl", "--user", "disable", record.unit], ctx.env);
    if (existsSync(record.file)) {
      rmSync(record.file, { force: true });
      removed.push(record.file);
    }
    if (record.mechanism === "systemd") tool(["systemctl", "--user", "daemon-reload"], ctx.env);
  }
  rmSync(ctx.layout.startupFile, { force: true });
  return { status: "disabled", ...describe(record), removed };
}
