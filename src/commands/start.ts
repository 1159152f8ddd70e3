import { defineCommand, describe } from "./_shared.ts";
import { startAppServer } from "../daemon/app-server.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: {
    name: "start",
    description: describe({
      summary: 'Start the app-server (idempotent); returns once it answers initialize',
      example: "ssh host '~/.local/bin/berth start'",
      env: ["BERTH_HOME", "BERTH_LOCK_WAIT_MS", "XDG_RUNTIME_DIR"],
      output: '{"status":"started"|"alreadyRunning","backend","pid?","managedBinaryPath","managedVersion","socketPath","cliVersion","appServerVersion?"}',
    }),
  },
  run: () => startAppServer(openContext()),
});
