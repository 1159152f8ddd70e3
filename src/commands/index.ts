import type { CommandDef } from "citty";

type LazyCommand = () => Promise<CommandDef<any>>;

/** Every subcommand, loaded on demand so `berth version` does not load the installer. */
export const commands: Record<string, LazyCommand> = {
  serve: () => import("./serve.ts").then((m) => m.default),
  start: () => import("./start.ts").then((m) => m.default),
  stop: () => import("./stop.ts").then((m) => m.default),
  restart: () => import("./restart.ts").then((m) => m.default),
  version: () => import("./version.ts").then((m) => m.default),
  status: () => import("./status.ts").then((m) => m.default),
};
