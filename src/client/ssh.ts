/**
 * Running the system's OpenSSH client: the command words (`BERTH_SSH`), the
 * remote command strings, and one-shot remote commands with their output.
 *
 * Remote commands never rely on the host's shell start-up files: each one
 * is `/bin/sh -c '<one line>'` with absolute paths or an explicit PATH, and
 * the login shell only has to parse one single-quoted word (which sh, bash,
 * zsh, fish and csh all do the same way).
 */
import { BerthError } from "../errors.ts";

/** A one-shot remote command gets this long before its ssh is killed. */
export const SSH_COMMAND_TIMEOUT_MS = 120_000;
/** ssh's own exit status when the connection or authentication failed. */
export const SSH_CONNECTION_FAILED = 255;
/** Kept tail of a remote command's stderr (ssh's diagnostics are at the end). */
const STDERR_TAIL_BYTES = 64 * 1024;
/** Kept head of a remote command's stdout (probe and install outputs are small). */
const STDOUT_MAX_BYTES = 4 * 1024 * 1024;

/**
 * Pure: splits a command line into words as a POSIX shell would (quotes,
 * backslashes; no expansion), so `BERTH_SSH="ssh -F './my config'"` works.
 */
export function shellWords(text: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quote: "'" | '"' | undefined;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i] as string;
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === "\\" && i + 1 < text.length && '$`"\\\n'.includes(text[i + 1] as string)) {
        i += 1;
        if (text[i] !== "\n") word += text[i];
      } else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === "\\") {
      i += 1;
      if (i < text.length && text[i] !== "\n") word += text[i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) throw new BerthError("USAGE", `BERTH_SSH has an unclosed ${quote} quote: ${text}`);
  if (inWord) words.push(word);
  return words;
}

/** The ssh command words: BERTH_SSH split like a shell would, else plain `ssh`. */
export function sshCommandWords(env: NodeJS.ProcessEnv = process.env): string[] {
  const words = env.BERTH_SSH?.trim() ? shellWords(env.BERTH_SSH) : ["ssh"];
  if (words.length === 0) return ["ssh"];
  return words;
}

/** Pure: quotes one word for a POSIX shell. */
export function shQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * Pure: `/bin/sh -c '<script>'` for the remote login shell to run. The
 * script must be one line and hold no single quote or `!` (csh), so the
 * login shell passes it through untouched whatever it is.
 */
export function shCommand(script: string): string {
  if (/['!\n]/.test(script)) throw new Error(`remote script must be one line without ' or !: ${script}`);
  return `/bin/sh -c '${script}'`;
}

/** Where berth's managed binary lives on a host, found by sh without start-up files. */
export const REMOTE_BERTH_SCRIPT =
  'b="${BERTH_HOME:-$HOME/.berth}/packages/standalone/current/berth"; [ -x "$b" ] || b="$HOME/.local/bin/berth"';

/** Pure: the remote command that runs `berth <args>` on a host (exit 127 when berth is missing). */
export function remoteBerthCommand(args: readonly string[], env: Record<string, string> = {}): string {
  const assignments = Object.entries(env).map(([key, value]) => `${key}=${shQuote(value)} `).join("");
  const quoted = args.map(shQuote).join(" ");
  if (/['!]/.test(assignments + quoted)) throw new BerthError("USAGE", `arguments for the remote berth cannot hold ' or !: ${quoted}`);
  return shCommand(`${REMOTE_BERTH_SCRIPT}; [ -x "$b" ] || { echo "berth is not installed on this host" >&2; exit 127; }; ${assignments}exec "$b" ${quoted}`);
}

/** Pure: the last non-empty line of ssh's stderr, for SSH_FAILED messages. */
export function lastLine(text: string): string {
  const lines = text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
  return lines[lines.length - 1] ?? "";
}

/** The error for an ssh that could not connect or log in (exit 255). */
export function sshFailed(host: string, stderr: string): BerthError {
  const line = lastLine(stderr) || "ssh exited with status 255 and said nothing";
  return new BerthError(
    "SSH_FAILED",
    `ssh to ${host} failed: ${line}. Check that \`ssh ${host} true\` works (host name, ~/.ssh/config, keys); BERTH_SSH overrides the ssh command.`,
  );
}

export type SshResult = { code: number; stdout: string; stderr: string };

export type SshOptions = {
  env?: NodeJS.ProcessEnv;
  /** Extra ssh options placed before the host (e.g. a ControlPath). */
  sshOptions?: readonly string[];
  /** Sent as the remote command's stdin (a file streams without being read into memory). */
  stdin?: Blob;
  timeoutMs?: number;
};

/** Appends to a bounded buffer: the head (`keep: "head"`) or the tail of what came. */
async function collect(stream: ReadableStream<Uint8Array>, limit: number, keep: "head" | "tail"): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of stream) {
    if (keep === "head" && size >= limit) continue;
    chunks.push(chunk);
    size += chunk.length;
    while (keep === "tail" && size - (chunks[0]?.length ?? 0) >= limit && chunks.length > 1) size -= (chunks.shift() as Uint8Array).length;
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Runs one remote command over ssh; throws SSH_FAILED when ssh itself fails. */
export async function runSsh(host: string, command: string, options: SshOptions = {}): Promise<SshResult> {
  const env = options.env ?? process.env;
  const [ssh, ...sshArgs] = sshCommandWords(env);
  let child: { stdout: ReadableStream<Uint8Array>; stderr: ReadableStream<Uint8Array>; exited: Promise<number>; kill(signal?: number | NodeJS.Signals): void };
  try {
    child = Bun.spawn({
      cmd: [ssh as string, ...sshArgs, ...(options.sshOptions ?? []), "-T", "--", host, command],
      env: env as Record<string, string>,
      stdin: options.stdin ?? "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
  } catch (error) {
    throw new BerthError("SSH_FAILED", `cannot run ${ssh}: ${(error as Error).message}. Install OpenSSH's client or set BERTH_SSH.`);
  }
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? SSH_COMMAND_TIMEOUT_MS);
  const [stdout, stderr, code] = await Promise.all([
    collect(child.stdout, STDOUT_MAX_BYTES, "head"),
    collect(child.stderr, STDERR_TAIL_BYTES, "tail"),
    child.exited,
  ]);
  clearTimeout(timer);
  if (code === SSH_CONNECTION_FAILED) throw sshFailed(host, stderr);
  return { code, stdout, stderr };
}
