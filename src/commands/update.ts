import { defineCommand, describe } from "./_shared.ts";
import { openContext } from "../daemon/context.ts";
import { updateNow } from "../update/update.ts";

export default defineCommand({
  meta: {
    name: "update",
    description: describe({
      summary: "Check for and install a newer release now (the loop's code path); replaces a running loop",
      example: 'berth update --check',
      env: ["BERTH_HOME", "BERTH_RELEASE_BASE_URL"],
      output: '{"status":"upToDate"|"updateAvailable"|"updated"|"rolledBack"|…,"latestVersion","managedVersion","restarted","updater?":{"pid","replaced"}}',
    }),
  },
  args: {
    check: { type: "boolean", description: "Only report whether an update is available" },
    release: { type: "string", description: "Install this version instead of the latest", valueHint: "VERSION" },
  },
  run: ({ args }) => updateNow(openContext(), { check: Boolean(args.check), ...(args.release ? { release: args.release } : {}) }),
});
