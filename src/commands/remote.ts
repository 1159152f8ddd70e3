import { parseRemoteArgs, REMOTE_USAGE } from "../client/args.ts";
import { defineCommand, describe } from "./_shared.ts";

/**
 * `berth remote HOST <subcommand> …`: the client side, run on the user's own
 * machine. Parses its own arguments (host before subcommand); the engine is
 * src/client/.
 */
export default defineCommand({
  meta: {
    name: "remote",
    description: describe({
      summary: `Bootstrap and use berth on a host over SSH: ${REMOTE_USAGE.replace(/^usage: berth remote /, "")}. In \`shell\`, Ctrl-\\ detaches; it reconnects by itself and exits with the remote shell's status`,
      example: "berth remote myhost bootstrap && berth remote myhost shell",
      env: ["BERTH_SSH (the ssh command, split like a shell)", "BERTH_RELEASE_BASE_URL", "BERTH_DETACH_KEY (^X or none)", "XDG_CACHE_HOME"],
      output:
        'bootstrap: {"status":"bootstrapped","host","target","action","method?","previousVersion","version","remote"}; ps: {"status":"ok","processes"}; kill: {"status":"signalled",…}; forward: {"status":"forwarding","local","remote"} first; shell/run/attach: nothing unless they fail to start',
    }),
  },
  args: {
    host: { type: "positional", required: false, description: "anything ssh accepts (an alias of ~/.ssh/config included)" },
    subcommand: { type: "positional", required: false, description: "bootstrap | shell | run | attach | ps | kill | forward" },
  },
  async run({ rawArgs }) {
    const args = parseRemoteArgs(rawArgs);
    switch (args.command) {
      case "bootstrap":
        return (await import("../client/bootstrap.ts")).remoteBootstrap(args.host, { remoteControl: args.remoteControl });
      default:
        return (await import("../client/commands.ts")).runRemote(args);
    }
  },
});
