import { defineCommand } from "citty";
import { install } from "../install/install.ts";
import { remoteControlArgs } from "./_shared.ts";

export default defineCommand({
  meta: { name: "install", description: "Install this executable as the managed berth (what install.sh runs)" },
  args: {
    bootstrap: { type: "boolean", description: "Start the app-server after installing" },
    ...remoteControlArgs,
    "modify-path": {
      type: "boolean",
      default: true,
      description: "Add the command link's folder to PATH in one shell profile",
      negativeDescription: "Leave shell profiles alone",
    },
  },
  run: ({ args }) =>
    install({ bootstrap: args.bootstrap, remoteControl: args["remote-control"], modifyPath: args["modify-path"] }),
});
