import { defineCommand } from "citty";
import { restartAppServer } from "../daemon/app-server.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: { name: "restart", description: "Stop (if running) then start the app-server on the managed binary" },
  run: () => restartAppServer(openContext()),
});
