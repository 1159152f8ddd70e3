import { defineCommand } from "citty";
import { openContext } from "../daemon/context.ts";
import { uninstall } from "../daemon/uninstall.ts";

export default defineCommand({
  meta: {
    name: "uninstall",
    description:
      "Remove berth: down, the startup entry, the command link, PATH blocks, the socket fallback folder and BERTH_HOME\n\n" +
      "Example: berth uninstall --keep-data\n" +
      "Environment: BERTH_HOME, BERTH_INSTALL_DIR, HOME, ZDOTDIR, XDG_RUNTIME_DIR\n" +
      'Output: {"status":"uninstalled","stopped":{…},"removed":[paths],"kept":[paths]}; running it again succeeds and removes nothing',
  },
  args: {
    "keep-data": { type: "boolean", description: "Keep daemon/settings.json and the remote-control token" },
  },
  run: ({ args }) => uninstall(openContext(), { keepData: Boolean(args["keep-data"]) }),
});
