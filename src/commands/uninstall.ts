import { defineCommand, describe } from "./_shared.ts";
import { openContext } from "../daemon/context.ts";
import { uninstall } from "../daemon/uninstall.ts";

export default defineCommand({
  meta: {
    name: "uninstall",
    description: describe({
      summary: "Remove berth: down, the startup entry, the command link, PATH blocks, the socket fallback folder and BERTH_HOME",
      example: "berth uninstall --keep-data",
      env: ["BERTH_HOME", "BERTH_INSTALL_DIR", "HOME", "ZDOTDIR", "XDG_RUNTIME_DIR"],
      output: '{"status":"uninstalled","stopped":{…},"removed":[paths],"kept":[paths]}; running it again succeeds and removes nothing',
    }),
  },
  args: {
    "keep-data": { type: "boolean", description: "Keep daemon/settings.json and the remote-control token" },
  },
  run: ({ args }) => uninstall(openContext(), { keepData: Boolean(args["keep-data"]) }),
});
