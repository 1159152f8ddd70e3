import { defineCommand } from "citty";
import { appServerVersion } from "../daemon/app-server.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: { name: "version", description: "Ask the running app-server its version (NOT_RUNNING when none answers)" },
  run: () => appServerVersion(openContext()),
});
