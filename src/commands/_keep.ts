import { defineCommand } from "citty";
import { openContext } from "../daemon/context.ts";
import { keep } from "../daemon/down.ts";

export default defineCommand({
  meta: { name: "keep", description: "Make sure the keeper runs (what the startup entry calls)", hidden: true },
  run: () => keep(openContext()),
});
