import { openContext } from "../daemon/context.ts";
import { followLog, parseLineCount, readLogs } from "../daemon/logs.ts";
import { renderJson, writeOutput } from "../output.ts";
import type { StreamingResult } from "../streaming.ts";
import { defineCommand, describe } from "./_shared.ts";

export default defineCommand({
  meta: {
    name: "logs",
    description: describe({
      summary: "Print the last lines of the app-server's log (or the updater's)",
      example: "berth logs --updater -n 20",
      env: ["BERTH_HOME"],
      output: '{"status":"logs","path","lines":[…]}; with --follow, then one {"line":"…"} per new line until interrupted',
    }),
  },
  args: {
    updater: { type: "boolean", description: "The updater's (and keeper's) log instead of the app-server's" },
    n: { type: "string", description: "How many lines (default 50)", valueHint: "N" },
    follow: { type: "boolean", description: "Keep printing new lines, across rotations, until interrupted" },
  },
  run: ({ args }) => {
    const lines = parseLineCount(args.n === undefined ? undefined : String(args.n));
    const { result, cursor } = readLogs(openContext(), { updater: Boolean(args.updater), lines, follow: Boolean(args.follow) });
    if (!args.follow) return result;
    const follow: StreamingResult = {
      streaming: true,
      firstLine: result,
      // Until interrupted, or until the reader goes away (a write that fails ends it).
      run: async () => {
        await followLog(result.path, cursor, async (line) => {
          if (!writeOutput(1, renderJson({ line }))) throw new Error("stdout closed");
        }).catch(() => undefined);
        return 0;
      },
    };
    return follow;
  },
});
