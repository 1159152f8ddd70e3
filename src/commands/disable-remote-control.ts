import { defineCommand } from "citty";
import { setRemoteControl } from "../daemon/bootstrap.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: { name: "disable-remote-control", description: "Stop serving the API over TCP (restarts a running app-server)" },
  run: () => setRemoteControl(openContext(), false),
});
