// The API families are loaded on the first call of one of their methods
// (src/server/api/index.ts). Their manifests must match their tables, a first
// call must answer exactly like the loaded family, and a family nobody called
// stays unloaded. Real families, real files; no server needed for these.
import { afterEach, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runMethod } from "../src/server/api/dispatch.ts";
import { apiFamilies, composeApi, createApi, lazyFamily, PROCESS_LEDGER_FILE } from "../src/server/api/index.ts";
import { method, type ApiFamily, type Conn, type MethodTable } from "../src/server/api/types.ts";
import { tempDirsPerTest } from "./helpers/berth.ts";

/** A connection that nobody reads: enough for calls that only answer. */
function quietConn(id = 1): Conn {
  const closers: Array<() => void> = [];
  return {
    id,
    closed: false,
    notify() {},
    notifyData() {},
    backlog: () => 0,
    onDrain: () => () => {},
    onClose(cleanup) {
      closers.push(cleanup);
      return () => {};
    },
  };
}

/** The JSON-RPC reply of one call (id 1), loosely typed for matching. */
const call = async (methods: MethodTable, name: string, params: unknown, conn = quietConn()): Promise<any> =>
  runMethod(1, name, methods[name]!, params, conn);

const tempDir = tempDirsPerTest(afterEach, "berth-lazy-");

describe("family manifests", () => {
  for (const [name, spec] of Object.entries(apiFamilies({ settings: {} }))) {
    test(`${name}: the manifest names exactly the loaded table's methods, with the same flow-control flags`, async () => {
      const family = await spec.load();
      try {
        const flags = (table: Record<string, { flowControlled?: boolean }>) =>
          Object.fromEntries(Object.entries(table).map(([m, entry]) => [m, entry.flowControlled === true]));
        expect(flags(spec.manifest)).toEqual(flags(family.methods));
      } finally {
        await family.shutdown?.();
      }
    });
  }
});

describe("composeApi", () => {
  test("shutdown merges what every family reports, in family order; families that report nothing add nothing", async () => {
    const family = (report: Record<string, unknown> | undefined, shutdown = true): ApiFamily => ({
      methods: {},
      ...(shutdown ? { shutdown: async () => report } : {}),
    });
    const cases: [ApiFamily[], Record<string, unknown>][] = [
      [[], {}],
      [[family(undefined), family(undefined, false)], {}],
      [[family({ processesEnded: 2 }), family(undefined), family({ tunnelsClosed: 1 })], { processesEnded: 2, tunnelsClosed: 1 }],
      [[family({ a: 1, b: 1 }), family({ b: 2 })], { a: 1, b: 2 }],
    ];
    for (const [families, merged] of cases) expect(await composeApi(families).shutdown()).toEqual(merged);
  });
});

describe("createApi", () => {
  test("nothing is loaded until a method is called; a first fs call loads fs alone and answers as fs does", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "f"), "hello");
    const api = await createApi({ settings: {}, stateDir: dir });
    const loaded = () => Object.entries(api.families).filter(([, f]) => f.loaded).map(([name]) => name);
    expect(Object.keys(api.methods)).toContain("fs/getMetadata");
    expect(api.methods["tunnel/write"]?.flowControlled).toBe(true);
    expect(api.methods["fs/getMetadata"]?.flowControlled).toBeUndefined();
    expect(loaded()).toEqual([]);

    const reply = await call(api.methods, "fs/getMetadata", { path: join(dir, "f") });
    expect(reply).toMatchObject({ id: 1, result: { type: "file", size: 5 } });
    expect(loaded()).toEqual(["fs"]);
    expect(await api.shutdown()).toEqual({ processesEnded: 0 });
  });

  // Each pair: the lazy table's reply must equal the loaded family's own, first call or not.
  const cases: Array<{ method: string; params: unknown }> = [
    { method: "fs/getMetadata", params: { path: "relative/path" } },
    { method: "fs/getMetadata", params: { path: "/nonexistent/berth-lazy" } },
    { method: "fs/readFile", params: { path: "/", offset: -1 } },
    { method: "fs/unwatch", params: { watchId: "w-none" } },
    { method: "process/attach", params: { processId: "p-none" } },
    { method: "process/signal", params: { processId: "p-none", signal: "SIGNOPE" } },
    { method: "process/list", params: {} },
    { method: "tunnel/write", params: { tunnelId: "t-none", data: "aGk=" } },
    { method: "tunnel/open", params: { host: "example.invalid", port: 80 } },
    { method: "tunnel/close", params: "not an object" },
  ];
  for (const { method: name, params } of cases) {
    test(`${name} ${JSON.stringify(params)}: the first call answers exactly as the loaded family`, async () => {
      const family = name.split("/")[0] as "fs" | "process" | "tunnel";
      const eager = await apiFamilies({ settings: {} })[family].load();
      const api = await createApi({ settings: {} });
      try {
        const expected = await call(eager.methods, name, params);
        expect(expected.error ?? expected.result).toBeDefined();
        expect(await call(api.methods, name, params)).toEqual(expected as never);
        // And once loaded, the same again.
        expect(await call(api.methods, name, params)).toEqual(expected as never);
        expect(api.families[family]?.loaded).toBe(true);
      } finally {
        await eager.shutdown?.();
        await api.shutdown();
      }
    });
  }

  test("system/info: the first call answers with every field of the spec", async () => {
    const api = await createApi({ settings: {} });
    const reply = (await call(api.methods, "system/info", {})) as { result: Record<string, unknown> };
    expect(Object.keys(reply.result).sort()).toEqual(["arch", "cpus", "disk", "home", "hostname", "loadavg", "memory", "os", "release", "shell", "uptimeS"]);
    expect(api.families.system?.loaded).toBe(true);
    expect(api.families.process?.loaded).toBe(false);
  });

  test("a ledger left by a killed server is handled at start (then removed) without loading the process family", async () => {
    const dir = tempDir();
    const ledger = join(dir, PROCESS_LEDGER_FILE);
    writeFileSync(ledger, JSON.stringify({ processes: [{ pid: 2 ** 22 + 1, identity: "not/this" }] }));
    const api = await createApi({ settings: {}, stateDir: dir });
    expect(await Bun.file(ledger).exists()).toBe(false);
    expect(api.families.process?.loaded).toBe(false);
  });
});

describe("lazyFamily", () => {
  const table = (): ApiFamily => ({
    methods: { "t/echo": method((raw) => raw as { n: number }, (p) => ({ n: p.n })) },
    shutdown: async () => ({ shut: true }),
  });

  test("concurrent first calls load the family once and each gets its own answer", async () => {
    let loads = 0;
    const family = lazyFamily({ "t/echo": {} }, async () => {
      loads += 1;
      await Bun.sleep(5);
      return table();
    });
    const replies = await Promise.all([1, 2, 3].map((n) => call(family.methods, "t/echo", { n })));
    expect(replies.map((r) => r?.result)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    expect(loads).toBe(1);
    expect(await family.shutdown?.()).toEqual({ shut: true });
  });

  test("a load that fails answers -32603 and the next call loads again", async () => {
    let loads = 0;
    const family = lazyFamily({ "t/echo": {} }, async () => {
      loads += 1;
      if (loads === 1) throw new Error("no module");
      return table();
    });
    expect((await call(family.methods, "t/echo", { n: 1 }))?.error).toMatchObject({ code: -32603, message: expect.stringContaining("no module") });
    expect(family.loaded).toBe(false);
    expect((await call(family.methods, "t/echo", { n: 2 }))?.result).toEqual({ n: 2 });
    expect(family.loaded).toBe(true);
  });

  test("never loaded: shutdown reports the given default and loads nothing", async () => {
    let loads = 0;
    const unused = lazyFamily({ "t/echo": {} }, async () => {
      loads += 1;
      return table();
    }, { processesEnded: 0 });
    expect(await unused.shutdown?.()).toEqual({ processesEnded: 0 });
    expect(loads).toBe(0);
  });
});
