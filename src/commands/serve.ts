import { serve } from "../server/run.ts";
import { defineCommand, describe, remoteControlArgs } from "./_shared.ts";

export default defineCommand({
  meta: {
    name: "serve",
    description: describe({
      summary: 'Run the app-server in the foreground (what the daemon launches)',
      example: 'berth serve --listen unix:///tmp/berth.sock',
      env: ["BERTH_HOME"],
      output: 'none while it runs (it writes only to its log); {"status":"stopped","pid","instanceId"} when it ends',
    }),
  },
  args: {
    listen: { type: "string", description: "Where to listen", valueHint: "unix://PATH" },
    ...remoteControlArgs,
  },
  run: ({ args }) => serve({ listen: args.listen, remoteControl: args["remote-control"] }),
});
