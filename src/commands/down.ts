import { defineCommand, describe } from "./_shared.ts";
import { openContext } from "../daemon/context.ts";
import { down } from "../daemon/down.ts";

export default defineCommand({
  meta: {
    name: "down",
    description: describe({
      summary: "Stop the app-server and its keeper; nothing comes back until start or bootstrap",
      example: "berth down",
      env: ["BERTH_HOME", "BERTH_LOCK_WAIT_MS"],
      output: '{"status":"down","appServer":"stopped"|"notRunning","keeper":"stopped"|"notRunning","socketPath","processesEnded","notEnded?"}',
    }),
  },
  run: () => down(openContext()),
});
