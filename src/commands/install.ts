import { install } from "../install/install.ts";
import { defineCommand, describe, remoteControlArgs } from "./_shared.ts";

export default defineCommand({
  meta: {
    name: "install",
    description: describe({
      summary: 'Install the running executable into BERTH_HOME (what install.sh calls)',
      example: './berth install --bootstrap',
      env: ["BERTH_HOME", "BERTH_INSTALL_DIR", "BERTH_RELEASE_BASE_URL", "HOME", "SHELL", "ZDOTDIR"],
      output: '{"status":"installed","version","target","managedBinaryPath","commandLink","pathUpdated","bootstrap?",…}',
    }),
  },
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
