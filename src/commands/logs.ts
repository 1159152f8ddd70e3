import { defineCommand } from "citty";
import { describe } from "./_shared.ts";
import { openContext } from "../daemon/context.ts";
import { followLog, parseLineCount, readLogs } from "../daemon/logs.ts";
import { FOLLOW } from "../stream.ts";

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
    return { ...result, [FOLLOW]: (emit: (value: object) => Promise<void>) => followLog(result.path, cursor, (line) => emit({ line })) };
  },
});
