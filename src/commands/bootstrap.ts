import { defineCommand } from "citty";
import { bootstrap } from "../daemon/bootstrap.ts";
import { openContext } from "../daemon/context.ts";
import { remoteControlArgs } from "./_shared.ts";

export default defineCommand({
  meta: { name: "bootstrap", description: "Persist settings, (re)start the app-server and the updater loop" },
  args: {
    ...remoteControlArgs,
    "auto-update": { type: "boolean", default: true, description: "Keep berth updated by the detached updater", negativeDescription: "Do not run the updater (stops a running one)" },
  },
  run: ({ args }) => bootstrap(openContext(), { remoteControl: args["remote-control"] as boolean | undefined, autoUpdate: args["auto-update"] !== false }),
});
