import { defineCommand } from "citty";
import { startAppServer } from "../daemon/app-server.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: { name: "start", description: "Start the app-server (idempotent); returns once it answers initialize" },
  run: () => startAppServer(openContext()),
});
