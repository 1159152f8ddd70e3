import { defineCommand } from "citty";
import { runUpdateLoop } from "../update/loop.ts";

export default defineCommand({
  meta: { name: "update-loop", description: "The detached updater (launched by bootstrap)", hidden: true },
  run: () => runUpdateLoop(),
});
