import { defineCommand } from "citty";
import { openContext } from "../daemon/context.ts";
import { updateNow } from "../update/update.ts";

export default defineCommand({
  meta: { name: "update", description: "Check for and install a newer release now (the loop's code path)" },
  args: {
    check: { type: "boolean", description: "Only report whether an update is available" },
    release: { type: "string", description: "Install this version instead of the latest", valueHint: "VERSION" },
  },
  run: ({ args }) => updateNow(openContext(), { check: Boolean(args.check), ...(args.release ? { release: args.release } : {}) }),
});
