/**
 * Pure parsing of `berth remote HOST <subcommand> …` (citty cannot take the
 * host before the subcommand). Every mistake is a USAGE error that says
 * what was expected.
 */
import { BerthError } from "../errors.ts";
import { didYouMean } from "../suggest.ts";

export type RemoteArgs =
  | { host: string; command: "bootstrap"; remoteControl: boolean }
  | { host: string; command: "shell"; name: string }
  | { host: string; command: "run"; name?: string; argv: string[] }
  | { host: string; command: "attach"; target: string }
  | { host: string; command: "ps" }
  | { host: string; command: "kill"; target: string; signal: string }
  | { host: string; command: "forward"; forward: Forward };

export type Forward = { localHost: string; localPort: number; remoteHost: string; remotePort: number };

export const REMOTE_USAGE =
  "usage: berth remote HOST bootstrap [--remote-control] | shell [NAME] | run [--name N] -- CMD… | attach ID|NAME | ps | kill ID|NAME [SIGNAL] | forward [LOCALHOST:]LOCALPORT:REMOTEHOST:REMOTEPORT";

export const DEFAULT_SHELL_NAME = "main";
const SUBCOMMANDS = ["bootstrap", "shell", "run", "attach", "ps", "kill", "forward"];
const SIGNALS = new Set(["SIGINT", "SIGTERM", "SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCONT", "SIGSTOP", "SIGWINCH"]);

function usage(detail: string): BerthError {
  return new BerthError("USAGE", `${detail}\n${REMOTE_USAGE}`);
}

function port(text: string, what: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < 1 || value > 65535) throw usage(`${what} must be a port number 1-65535, not ${JSON.stringify(text)}.`);
  return value;
}

/** Pure: `[LOCALHOST:]LOCALPORT:REMOTEHOST:REMOTEPORT`, with [v6] brackets allowed around hosts. */
export function parseForward(spec: string): Forward {
  const parts = spec.match(/\[[^\]]*\]|[^:]+/g) ?? [];
  if (parts.length !== 3 && parts.length !== 4) throw usage(`forward needs [LOCALHOST:]LOCALPORT:REMOTEHOST:REMOTEPORT, got ${JSON.stringify(spec)}.`);
  const unbracket = (host: string) => host.replace(/^\[(.*)\]$/, "$1");
  const [localHost, localPort, remoteHost, remotePort] = parts.length === 4 ? parts : ["127.0.0.1", ...parts];
  return {
    localHost: unbracket(localHost as string),
    localPort: port(localPort as string, "LOCALPORT"),
    remoteHost: unbracket(remoteHost as string),
    remotePort: port(remotePort as string, "REMOTEPORT"),
  };
}

/** Pure: a signal name as the API takes it (`term`, `TERM`, `SIGTERM` → `SIGTERM`). */
export function parseSignal(text: string): string {
  const name = text.toUpperCase().startsWith("SIG") ? text.toUpperCase() : `SIG${text.toUpperCase()}`;
  if (!SIGNALS.has(name)) throw usage(`unknown signal ${JSON.stringify(text)}; one of ${[...SIGNALS].join(", ")}.`);
  return name;
}

export function parseRemoteArgs(argv: readonly string[]): RemoteArgs {
  const [host, command, ...rest] = argv;
  if (!host || host.startsWith("-")) throw usage("berth remote needs a HOST first (anything ssh accepts).");
  // `berth remote ps`, `berth remote run -- ls`: a subcommand where the HOST belongs, and no host after it.
  const hostMissing = () => usage(`${JSON.stringify(host)} is a subcommand: berth remote needs a HOST first, as in \`berth remote HOST ${host}\`.`);
  if (!command) throw SUBCOMMANDS.includes(host) ? hostMissing() : usage(`berth remote ${host} needs a subcommand.`);
  const positionals = (max: number) => {
    if (rest.some((arg) => arg.startsWith("-"))) throw usage(`unknown option ${rest.find((arg) => arg.startsWith("-"))} for \`remote ${command}\`.`);
    if (rest.length > max) throw usage(`unexpected argument ${JSON.stringify(rest[max])} for \`remote ${command}\`.`);
    return rest;
  };
  switch (command) {
    case "bootstrap": {
      const unknown = rest.find((arg) => arg !== "--remote-control");
      if (unknown !== undefined) throw usage(`unexpected argument ${JSON.stringify(unknown)} for \`remote bootstrap\`.${didYouMean(unknown, ["--remote-control"])}`);
      return { host, command, remoteControl: rest.includes("--remote-control") };
    }
    case "shell":
      return { host, command, name: positionals(1)[0] ?? DEFAULT_SHELL_NAME };
    case "ps":
      positionals(0);
      return { host, command };
    case "attach": {
      const [target] = positionals(1);
      if (!target) throw usage("remote attach needs a process ID or NAME (see `berth remote HOST ps`).");
      return { host, command, target };
    }
    case "kill": {
      const [target, signal] = positionals(2);
      if (!target) throw usage("remote kill needs a process ID or NAME (see `berth remote HOST ps`).");
      return { host, command, target, signal: parseSignal(signal ?? "SIGTERM") };
    }
    case "forward": {
      const [spec] = positionals(1);
      if (!spec) throw usage("remote forward needs [LOCALHOST:]LOCALPORT:REMOTEHOST:REMOTEPORT.");
      return { host, command, forward: parseForward(spec) };
    }
    case "run": {
      let name: string | undefined;
      let i = 0;
      for (; i < rest.length && rest[i] !== "--"; i += 1) {
        const arg = rest[i] as string;
        if (arg === "--name" && (rest[i + 1] === undefined || rest[i + 1] === "--")) throw usage("--name needs a value, as in `remote HOST run --name N -- CMD…`.");
        if (arg === "--name") name = rest[++i];
        else if (arg.startsWith("--name=")) name = arg.slice("--name=".length);
        else throw usage(`unexpected argument ${JSON.stringify(arg)} for \`remote run\` (the command goes after --).${didYouMean(arg.split("=")[0] as string, ["--name"])}`);
      }
      const cmd = rest.slice(i + 1);
      if (cmd.length === 0) throw usage("remote run needs a command after --.");
      return { host, command, argv: cmd, ...(name ? { name } : {}) };
    }
    default:
      // `berth remote shell myhost`: the subcommand came first.
      if (SUBCOMMANDS.includes(host)) {
        if (command.startsWith("-")) throw hostMissing();
        throw usage(`${JSON.stringify(host)} is a subcommand: the HOST comes first, as in \`berth remote ${command} ${host}\`.`);
      }
      throw usage(`unknown remote subcommand ${JSON.stringify(command)}.${didYouMean(command, SUBCOMMANDS)}`);
  }
}
