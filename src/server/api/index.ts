/**
 * The app-server API: every family's table merged into one. A family is
 * added here and nowhere else.
 */
import { createFsApi } from "./fs.ts";
import { createSystemApi } from "./system.ts";
import { createTunnelApi } from "./tunnel.ts";
import type { ApiFamily, MethodTable } from "./types.ts";

export type ApiOptions = {
  /** Loaded settings of this BERTH_HOME (processes.*, tunnels.*). */
  settings: Record<string, unknown>;
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
  return composeApi([createFsApi(), createSystemApi(), createTunnelApi(options.settings)]);
}
