import { defineCommand } from "citty";
import { parseRemoteArgs, REMOTE_USAGE } from "../client/args.ts";

/**
 * `berth remote HOST <subcommand> …`: the client side, run on the user's own
 * machine. Parses its own arguments (host before subcommand); the engine is
 * src/client/.
 */
export default defineCommand({
  meta: {
    name: "remote",
    description: `Bootstrap and use berth on a host over SSH (BERTH_SSH overrides ssh; in \`shell\`, Ctrl-\\ detaches, BERTH_DETACH_KEY=^X changes it). ${REMOTE_USAGE.replace(/^usage: /, "")}`,
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
