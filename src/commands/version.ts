import { defineCommand, describe } from "./_shared.ts";
import { appServerVersion } from "../daemon/answer.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: {
    name: "version",
    description: describe({
      summary: 'Ask the running app-server who it is (NOT_RUNNING when none answers)',
      example: 'berth version',
      env: ["BERTH_HOME"],
      output: '{"status":"running","backend","pid","appServerVersion","cliVersion",…}',
    }),
  },
  run: () => appServerVersion(openContext()),
});
