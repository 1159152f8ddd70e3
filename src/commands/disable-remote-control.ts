import { defineCommand, describe } from "./_shared.ts";
import { setRemoteControl } from "../daemon/bootstrap.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: {
    name: "disable-remote-control",
    description: describe({
      summary: 'Stop serving the API over TCP; restarts a running app-server',
      example: 'berth disable-remote-control',
      env: ["BERTH_HOME", "BERTH_LOCK_WAIT_MS"],
      output: '{"status":"disabled"|"alreadyDisabled","remoteControlEnabled",…}',
    }),
  },
  run: () => setRemoteControl(openContext(), false),
});
