import { defineCommand, describe } from "./_shared.ts";
import { setRemoteControl } from "../daemon/bootstrap.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: {
    name: "enable-remote-control",
    description: describe({
      summary: 'Serve the API over TCP too (bearer token); restarts a running app-server',
      example: 'berth enable-remote-control',
      env: ["BERTH_HOME", "BERTH_LOCK_WAIT_MS"],
      output: '{"status":"enabled"|"alreadyEnabled","remoteControlEnabled","remoteControl?":{"url","tokenPath"},…}',
    }),
  },
  run: () => setRemoteControl(openContext(), true),
});
