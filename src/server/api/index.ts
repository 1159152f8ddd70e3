/**
 * The app-server API: every family's table merged into one. A family is
 * added here and nowhere else.
 */
import { join } from "node:path";
import { createFsApi } from "./fs.ts";
import { processFamily } from "./process.ts";
import { createSystemApi } from "./system.ts";
import { createTunnelApi } from "./tunnel.ts";
import type { ApiFamily, MethodTable } from "./types.ts";

/**
 * Processes get this share of the server's stopGraceMs to end on SIGTERM/SIGHUP
 * before SIGKILL, so the server itself exits before `stop` loses patience with it.
 */
export const PROCESS_GRACE_SHARE = 0.8;
/** In daemon/: the session processes that run (see src/server/process/ledger.ts). */
export const PROCESS_LEDGER_FILE = "app-server.processes.json";

export type ApiOptions = {
  /** Loaded settings of this BERTH_HOME (processes.*, tunnels.*). */
  settings: Record<string, unknown>;
  /** The app-server's state folder (daemon/): where the process ledger lives. */
  stateDir?: string;
};

export type Api = {
  methods: MethodTable;
  /** Ends what the families own (processes, watches, tunnels); merges what they report. */
  shutdown(): Promise<Record<string, unknown>>;
};

export function composeApi(families: ApiFamily[]): Api {
  const methods: MethodTable = {};
  for (const family of families) {
    for (const [name, entry] of Object.entries(family.methods)) {
      if (name in methods) throw new Error(`API method ${name} is defined twice`);
      methods[name] = entry;
    }
  }
  return {
    methods,
    async shutdown() {
      const reports = await Promise.all(families.map((family) => family.shutdown?.() ?? Promise.resolve()));
      return Object.assign({}, ...reports.filter(Boolean));
    },
  };
}

/** The families the app-server serves. */
export function createApi(options: ApiOptions): Api {
  const settings = options.settings;
  const stopGraceMs = typeof settings.stopGraceMs === "number" ? settings.stopGraceMs : 60_000;
  const limits = (settings.processes ?? {}) as Record<string, number>;
  return composeApi([
    processFamily({
      limits,
      stopGraceMs: Math.floor(stopGraceMs * PROCESS_GRACE_SHARE),
      ...(options.stateDir ? { ledgerPath: join(options.stateDir, PROCESS_LEDGER_FILE) } : {}),
    }),
    createFsApi(),
    createSystemApi(),
    createTunnelApi(options.settings),
  ]);
}
