import { openContext } from "../daemon/context.ts";
import type { StreamingResult } from "../streaming.ts";
import { defineCommand, describe } from "./_shared.ts";

export default defineCommand({
  meta: {
    name: "connect",
    description: describe({
      summary: "Bridge stdin/stdout to the app-server's JSON-RPC API (starts it if needed)",
      example: "ssh host '~/.local/bin/berth connect'",
      env: ["BERTH_HOME", "BERTH_LOCK_WAIT_MS", "XDG_RUNTIME_DIR"],
      output: '{"status":"connected","protocol","pid","appServerVersion","cliVersion","socketPath"} first, then the API JSON-RPC messages, one JSON object per line, both ways',
    }),
  },
  args: {
    start: { type: "boolean", default: true, description: "Start the app-server if it is not running (--no-start: fail with NOT_RUNNING)" },
  },
  async run({ args }): Promise<StreamingResult> {
    const { openBridge } = await import("../server/bridge.ts");
    const bridge = await openBridge(openContext(), { start: args.start !== false });
    return { streaming: true, firstLine: bridge.firstLine, run: bridge.run };
  },
});
