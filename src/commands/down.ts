import { defineCommand } from "citty";
import { openContext } from "../daemon/context.ts";
import { down } from "../daemon/down.ts";

export default defineCommand({
  meta: {
    name: "down",
    description:
      "Stop the app-server and its keeper; nothing comes back until start or bootstrap\n\n" +
      "Example: berth down\n" +
      "Environment: BERTH_HOME, BERTH_LOCK_WAIT_MS\n" +
      'Output: {"status":"down","appServer":"stopped"|"notRunning","keeper":"stopped"|"notRunning","socketPath"}',
  },
  run: () => down(openContext()),
});
