import { defineCommand } from "citty";
import { serve } from "../server/run.ts";
import { remoteControlArgs } from "./_shared.ts";

export default defineCommand({
  meta: { name: "serve", description: "Run the app-server in the foreground (what the daemon launches)" },
  args: {
    listen: { type: "string", description: "Where to listen", valueHint: "unix://PATH" },
    ...remoteControlArgs,
  },
  run: ({ args }) => serve({ listen: args.listen, remoteControl: args["remote-control"] }),
});
