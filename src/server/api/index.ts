/**
 * The app-server API: every family's table merged into one. A family is
 * added here and nowhere else.
 *
 * Each family is loaded on the first call of one of its methods, not at
 * start: an app-server that only ever answers `initialize` (most of its life)
 * never evaluates the fs, process or tunnel modules (bench/README.md: ~1 MB
 * of idle RSS). The table below names every method up front, so routing
 * (method not found, flow control) is decided before any module loads; params
 * are still checked by the family's own table, once it is loaded.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { ApiFamily, Method, MethodTable } from "./types.ts";

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
  /** The real daemon: orphans of its processes are re-parented to it and ended at stop (process/orphans.ts). */
  adoptOrphans?: boolean;
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
      // A plain loop: filter + spread cost stop ~0.13 ms (first use of those builtins, right before the exit).
      const merged: Record<string, unknown> = {};
      for (const report of reports) if (report) Object.assign(merged, report);
      return merged;
    },
  };
}

/** What routing must know of a family before it is loaded: its method names, and which are flow-controlled. */
export type FamilyManifest = Readonly<Record<string, { flowControlled?: true }>>;

export type LazyFamily = ApiFamily & { readonly loaded: boolean };

/**
 * A family whose module is imported on the first call of any of its methods.
 * Until then each method is a stand-in with the manifest's flags whose params
 * pass through unchecked; its handler loads the family, then runs the real
 * entry (params check, then handler), so a first call's result and errors are
 * the loaded family's own. Shutdown ends only what a loaded family owns.
 */
export function lazyFamily(manifest: FamilyManifest, load: () => Promise<ApiFamily>, unloadedReport: Record<string, unknown> = {}): LazyFamily {
  let loading: Promise<ApiFamily> | undefined;
  let family: ApiFamily | undefined;
  const ensure = (): Promise<ApiFamily> =>
    (loading ??= load().then(
      (loaded) => (family = loaded),
      (error: unknown) => {
        loading = undefined; // the next call tries again
        throw error;
      },
    ));
  const run = (loaded: ApiFamily, name: string, raw: unknown, conn: Parameters<Method["handle"]>[1]) => {
    const entry = loaded.methods[name];
    if (!entry) throw new Error(`API method ${name} is in the manifest but not in its family's table`);
    return entry.handle(entry.params(raw), conn);
  };
  const methods: MethodTable = {};
  for (const [name, flags] of Object.entries(manifest)) {
    methods[name] = {
      params: (raw) => raw,
      // Once loaded, synchronously, exactly as the family's own entry.
      handle: (raw, conn) => (family ? run(family, name, raw, conn) : ensure().then((loaded) => run(loaded, name, raw, conn))),
      ...(flags.flowControlled ? { flowControlled: true } : {}),
    };
  }
  return {
    methods,
    get loaded() {
      return family !== undefined;
    },
    async shutdown() {
      if (!loading) return unloadedReport;
      const loaded = await loading.catch(() => undefined);
      return (await loaded?.shutdown?.()) ?? undefined;
    },
  };
}

const PROCESS_METHODS: FamilyManifest = {
  "process/spawn": {},
  "process/attach": {},
  "process/detach": {},
  "process/write": {},
  "process/closeStdin": {},
  "process/resize": {},
  "process/signal": {},
  "process/list": {},
  "process/remove": {},
};
const FS_METHODS: FamilyManifest = {
  "fs/readFile": {},
  "fs/writeFile": {},
  "fs/getMetadata": {},
  "fs/readDirectory": {},
  "fs/createDirectory": {},
  "fs/remove": {},
  "fs/rename": {},
  "fs/watch": {},
  "fs/unwatch": {},
};
const SYSTEM_METHODS: FamilyManifest = { "system/info": {} };
const TUNNEL_METHODS: FamilyManifest = {
  "tunnel/open": {},
  "tunnel/write": { flowControlled: true },
  "tunnel/close": {},
};

/** How `createApi` builds a family: its manifest (tests check it against the table), its loader, what it reports if never loaded. */
export type FamilySpec = { manifest: FamilyManifest; load: () => Promise<ApiFamily>; unloadedReport?: Record<string, unknown> };

/** The families the app-server serves. */
export function apiFamilies(options: ApiOptions): Record<"process" | "fs" | "system" | "tunnel", FamilySpec> {
  const settings = options.settings;
  const stopGraceMs = typeof settings.stopGraceMs === "number" ? settings.stopGraceMs : 60_000;
  const limits = (settings.processes ?? {}) as Record<string, number>;
  return {
    process: {
      manifest: PROCESS_METHODS,
      load: async () => {
        const family = (await import("./process.ts")).processFamily({
          limits,
          stopGraceMs: Math.floor(stopGraceMs * PROCESS_GRACE_SHARE),
          ...(options.stateDir ? { ledgerPath: join(options.stateDir, PROCESS_LEDGER_FILE) } : {}),
        });
        if (options.adoptOrphans) await family.manager.adoptOrphans(); // before its first spawn
        return family;
      },
      // What its shutdown reports with no process: `stop` prints processesEnded either way.
      unloadedReport: { processesEnded: 0 },
    },
    fs: { manifest: FS_METHODS, load: async () => (await import("./fs.ts")).createFsApi() },
    system: { manifest: SYSTEM_METHODS, load: async () => (await import("./system.ts")).createSystemApi() },
    tunnel: { manifest: TUNNEL_METHODS, load: async () => (await import("./tunnel.ts")).createTunnelApi(settings) },
  };
}

/** The families the app-server serves, each loaded on its first call. */
export async function createApi(options: ApiOptions): Promise<Api & { families: Record<string, LazyFamily> }> {
  // Session processes a killed app-server left behind end now, at start, not at the first process/* call.
  // No ledger (a clean stop removes it) means none: the code that checks identities is not even loaded.
  const ledgerPath = options.stateDir ? join(options.stateDir, PROCESS_LEDGER_FILE) : undefined;
  if (ledgerPath && existsSync(ledgerPath)) (await import("../process/ledger.ts")).endLeftovers(ledgerPath);
  const families: Record<string, LazyFamily> = {};
  for (const [name, spec] of Object.entries(apiFamilies(options))) families[name] = lazyFamily(spec.manifest, spec.load, spec.unloadedReport);
  return { ...composeApi(Object.values(families)), families };
}
