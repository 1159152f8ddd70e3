import { defineCommand } from "citty";
import { stopAppServer } from "../daemon/app-server.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: { name: "stop", description: "Stop the app-server gracefully (the updater is left alone)" },
  run: () => stopAppServer(openContext()),
});
