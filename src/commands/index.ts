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
  bootstrap: () => import("./bootstrap.ts").then((m) => m.default),
  "enable-remote-control": () => import("./enable-remote-control.ts").then((m) => m.default),
  "disable-remote-control": () => import("./disable-remote-control.ts").then((m) => m.default),
  update: () => import("./update.ts").then((m) => m.default),
  "update-loop": () => import("./_update-loop.ts").then((m) => m.default),
  install: () => import("./install.ts").then((m) => m.default),
  logs: () => import("./logs.ts").then((m) => m.default),
  down: () => import("./down.ts").then((m) => m.default),
  uninstall: () => import("./uninstall.ts").then((m) => m.default),
  startup: () => import("./startup.ts").then((m) => m.default),
  keep: () => import("./_keep.ts").then((m) => m.default),
  doctor: () => import("./doctor.ts").then((m) => m.default),
  connect: () => import("./connect.ts").then((m) => m.default),
  remote: () => import("./remote.ts").then((m) => m.default),
};
