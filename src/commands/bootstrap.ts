import { bootstrap } from "../daemon/bootstrap.ts";
import { openContext } from "../daemon/context.ts";
import { defineCommand, describe, remoteControlArgs } from "./_shared.ts";

export default defineCommand({
  meta: {
    name: "bootstrap",
    description: describe({
      summary: 'Persist settings, (re)start the app-server and its keeper (the updater loop)',
      example: 'berth bootstrap --remote-control',
      env: ["BERTH_HOME", "BERTH_RELEASE_BASE_URL", "BERTH_UPDATE_INITIAL_DELAY_MS", "BERTH_UPDATE_INTERVAL_MS"],
      output: '{"status":"bootstrapped","backend","autoUpdateEnabled","remoteControlEnabled","managedVersion","socketPath","appServerVersion","updater":{"pid"},…}',
    }),
  },
  args: {
    ...remoteControlArgs,
    "auto-update": { type: "boolean", default: true, description: "Keep berth updated by the detached updater", negativeDescription: "Do not run the updater (stops a running one)" },
  },
  run: ({ args }) => bootstrap(openContext(), { remoteControl: args["remote-control"] as boolean | undefined, autoUpdate: args["auto-update"] !== false }),
});
