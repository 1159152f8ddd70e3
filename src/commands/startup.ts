import { defineCommand } from "citty";
import { openContext, prepareStateDirs } from "../daemon/context.ts";
import { disableStartup, enableStartup } from "../daemon/startup.ts";

export default defineCommand({
  meta: {
    name: "startup",
    description:
      "Bring the keeper (and so the app-server) back after a reboot or logout: systemd user unit, LaunchAgent, or @reboot crontab line\n\n" +
      "Example: berth startup   (undo: berth startup --disable)\n" +
      "Environment: BERTH_HOME, HOME, XDG_CONFIG_HOME, USER\n" +
      'Output: {"status":"enabled"|"alreadyEnabled"|"disabled"|"alreadyDisabled","mechanism","file?","line?","linger?","lingerCommand?"}',
  },
  args: {
    disable: { type: "boolean", description: "Remove exactly what `berth startup` added" },
  },
  run: ({ args }) => {
    const ctx = openContext();
    prepareStateDirs(ctx);
    return args.disable ? disableStartup(ctx) : enableStartup(ctx);
  },
});
