import { defineCommand } from "citty";
import { openContext } from "../daemon/context.ts";
import type { StreamingResult } from "../streaming.ts";

export default defineCommand({
  meta: { name: "connect", description: "Bridge stdin/stdout to the app-server's JSON-RPC API (starts it if needed)" },
  args: {
    start: { type: "boolean", default: true, description: "Start the app-server if it is not running (--no-start: fail with NOT_RUNNING)" },
  },
  async run({ args }): Promise<StreamingResult> {
    const { openBridge } = await import("../server/bridge.ts");
    const bridge = await openBridge(openContext(), { start: args.start !== false });
    return { streaming: true, firstLine: bridge.firstLine, run: bridge.run };
  },
});
