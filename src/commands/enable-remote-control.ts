import { defineCommand } from "citty";
import { setRemoteControl } from "../daemon/bootstrap.ts";
import { openContext } from "../daemon/context.ts";

export default defineCommand({
  meta: { name: "enable-remote-control", description: "Serve the API over TCP behind a bearer token (restarts a running app-server)" },
  run: () => setRemoteControl(openContext(), true),
});
