import { defineCommand, describe } from "./_shared.ts";
import { openContext } from "../daemon/context.ts";
import { collectStatus } from "../daemon/status.ts";

export default defineCommand({
  meta: {
    name: "status",
    description: describe({
      summary: 'Everything known, running or not: app-server (state, lastExit, restarts), keeper/updater, settings, releases',
      example: 'berth status',
      env: ["BERTH_HOME", "XDG_RUNTIME_DIR"],
      output: '{"status":<app-server state>,"appServer":{"state","wanted","restarts","lastExit?",…},"updater":{"state","version?","lastCheck?",…},"settings","releases",…}',
    }),
  },
  run: () => collectStatus(openContext()),
});
