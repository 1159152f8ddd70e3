import { defineCommand, describe } from "./_shared.ts";
import { restartAppServer } from "../daemon/app-server.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: {
    name: "restart",
    description: describe({
      summary: 'Stop (if running) then start the app-server on the managed binary',
      example: 'berth restart',
      env: ["BERTH_HOME", "BERTH_LOCK_WAIT_MS"],
      output: '{"status":"restarted","backend","pid","managedVersion","socketPath","appServerVersion",…}',
    }),
  },
  run: () => restartAppServer(openContext()),
});
