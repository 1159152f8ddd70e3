import { defineCommand, describe } from "./_shared.ts";
import { stopAppServer } from "../daemon/app-server.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: {
    name: "stop",
    description: describe({
      summary: 'Stop the app-server gracefully; the keeper stays for updates and leaves it stopped',
      example: 'berth stop',
      env: ["BERTH_HOME", "BERTH_LOCK_WAIT_MS"],
      output: '{"status":"stopped"|"notRunning","backend","managedBinaryPath","managedVersion","socketPath","cliVersion"}',
    }),
  },
  run: () => stopAppServer(openContext()),
});
