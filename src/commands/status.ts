import { defineCommand } from "citty";
import { openContext } from "../daemon/context.ts";
import { collectStatus } from "../daemon/status.ts";

export default defineCommand({
  meta: { name: "status", description: "Everything known about the app-server, updater, settings and releases" },
  run: () => collectStatus(openContext()),
});
