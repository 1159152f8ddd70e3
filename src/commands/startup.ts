import { defineCommand, describe } from "./_shared.ts";
import { openContext, prepareStateDirs } from "../daemon/context.ts";
import { disableStartup, enableStartup } from "../daemon/startup.ts";

export default defineCommand({
  meta: {
    name: "startup",
    description: describe({
      summary: "Bring the keeper (and so the app-server) back after a reboot or logout: systemd user unit, LaunchAgent, or @reboot crontab line",
      example: "berth startup   (undo: berth startup --disable)",
      env: ["BERTH_HOME", "HOME", "XDG_CONFIG_HOME", "USER"],
      output: '{"status":"enabled"|"alreadyEnabled"|"disabled"|"alreadyDisabled","mechanism","file?","line?","linger?","lingerCommand?"}',
    }),
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
