/**
 * Which mappings the idle trim may unmap (src/server/idle-trim.ts), as a
 * table over real /proc/<pid>/smaps entries of a compiled berth app-server;
 * and the one-shot timer's decision.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  deviceNumbers,
  idleTrimmer,
  idleTrimStep,
  readBoundedText,
  SMAPS_MAX_BYTES,
  trimmableRanges,
  trimOwnExecutable,
  type ExecutableIdentity,
} from "../src/server/idle-trim.ts";

/** One smaps entry as Linux 6.x prints it (fields between Rss and Anonymous trimmed to the real ones). */
function entry(header: string, rssKb: number, anonymousKb: number | undefined, flags: string): string {
  return [
    header,
    "Size:              24804 kB",
    "KernelPageSize:        4 kB",
    "MMUPageSize:           4 kB",
    `Rss:            ${String(rssKb).padStart(6)} kB`,
    `Pss:            ${String(rssKb).padStart(6)} kB`,
    "Shared_Clean:          4 kB",
    "Private_Dirty:         0 kB",
    ...(anonymousKb === undefined ? [] : [`Anonymous:      ${String(anonymousKb).padStart(6)} kB`]),
    "LazyFree:              0 kB",
    "Swap:                  0 kB",
    "Locked:                0 kB",
    "THPeligible:           0",
    `VmFlags: ${flags} `,
  ].join("\n");
}

const EXE: ExecutableIdentity = { major: 0xfe, minor: 0, inode: 5332999n, path: "/tmp/rss-exp/berth-base" };
const exe = (range: string, perms: string, offset: string, path = EXE.path) => `${range} ${perms} ${offset} fe:00 5332999                            ${path}`;

type Case = { name: string; text: string; trimmed: boolean; exe?: ExecutableIdentity };

const cases: Case[] = [
  { name: "the executable's read-only data (r--p, Anonymous 0)", text: entry(exe("00200000-01a39000", "r--p", "00000000"), 4876, 0, "rd mr mw me"), trimmed: true },
  { name: "the executable's code (r-xp, Anonymous 0)", text: entry(exe("01a40000-0684a000", "r-xp", "01838000"), 20348, 0, "rd ex mr mw me"), trimmed: true },
  { name: "the executable's writable data (rw-p): private copies", text: entry(exe("0684a000-0685f000", "rw-p", "06641000"), 84, 48, "rd wr mr mw me ac"), trimmed: false },
  { name: "rw-p of the executable even with Anonymous 0 (a thread may write it any moment)", text: entry(exe("06867000-06cb5000", "rw-p", "0665e000"), 2128, 0, "rd wr mr mw me ac"), trimmed: false },
  { name: "relocated read-only data (r--p after RELRO, Anonymous 12): would lose relocations", text: entry(exe("0685f000-06867000", "r--p", "06656000"), 32, 12, "rd mr mw me ac"), trimmed: false },
  {
    // MADV_DONTNEED frees the swap entry too: the next touch maps the file's unrelocated bytes.
    name: "relocated read-only data whose private pages were swapped out (Anonymous 0, Swap 8): still private copies",
    text: entry(exe("0685f000-06867000", "r--p", "06656000"), 20, 0, "rd mr mw me ac").replace(/^Swap: .*$/m, "Swap:                  8 kB"),
    trimmed: false,
  },
  {
    name: "a mapping whose smaps has no Swap line is not known clean",
    text: entry(exe("00200000-01a39000", "r--p", "00000000"), 4876, 0, "rd mr mw me").replace(/^Swap: .*\n/m, ""),
    trimmed: false,
  },
  { name: "a mapping whose smaps has no Anonymous line is not known clean", text: entry(exe("00200000-01a39000", "r--p", "00000000"), 4876, undefined, "rd mr mw me"), trimmed: false },
  { name: "nothing resident: nothing to do", text: entry(exe("00200000-01a39000", "r--p", "00000000"), 0, 0, "rd mr mw me"), trimmed: false },
  {
    name: "after an update renamed a new release over it: ' (deleted)' path, same inode",
    text: entry(exe("01a40000-0684a000", "r-xp", "01838000", `${EXE.path} (deleted)`), 20348, 0, "rd ex mr mw me"),
    exe: { ...EXE, path: `${EXE.path} (deleted)` },
    trimmed: true,
  },
  {
    name: "the deleted old file's mapping when /proc/self/exe names the live path: not ours",
    text: entry(exe("01a40000-0684a000", "r-xp", "01838000", `${EXE.path} (deleted)`), 20348, 0, "rd ex mr mw me"),
    trimmed: false,
  },
  {
    name: "same path, another inode (the file was replaced in place)",
    text: entry(`01a40000-0684a000 r-xp 01838000 fe:00 5333008                            ${EXE.path}`, 20348, 0, "rd ex mr mw me"),
    trimmed: false,
  },
  {
    name: "same inode on another device",
    text: entry(`01a40000-0684a000 r-xp 01838000 fe:01 5332999                            ${EXE.path}`, 20348, 0, "rd ex mr mw me"),
    trimmed: false,
  },
  {
    name: "libc's code (another file)",
    text: entry("7f447c284000-7f447c3da000 r-xp 00026000 fe:00 339380                     /usr/lib/x86_64-linux-gnu/libc.so.6", 1112, 0, "rd ex mr mw me"),
    trimmed: false,
  },
  { name: "[vdso] (not a file)", text: entry("7f447c451000-7f447c453000 r-xp 00000000 00:00 0                          [vdso]", 4, 0, "rd ex mr mw me de"), trimmed: false },
  { name: "[heap]", text: entry("2f62c000-2f64d000 rw-p 00000000 00:00 0                                  [heap]", 8, 8, "rd wr mr mw me ac"), trimmed: false },
  { name: "JIT code (anonymous rwxp)", text: entry("7f443bf19000-7f447bf19000 rwxp 00000000 00:00 0 ", 20, 20, "rd wr ex mr mw me dc nr nh"), trimmed: false },
  { name: "an anonymous read-only mapping with no path", text: entry("7f447c200000-7f447c210000 r--p 00000000 00:00 0 ", 64, 64, "rd mr mw me"), trimmed: false },
  {
    name: "a shared read-only mapping of the executable (r--s): no private pages possible",
    text: entry(exe("00200000-01a39000", "r--s", "00000000"), 4876, 0, "rd sh mr mw me ms"),
    trimmed: true,
  },
];

describe("trimmableRanges: only clean, read-only mappings of our own executable", () => {
  for (const { name, text, trimmed, exe: identity } of cases) {
    test(name, () => {
      const ranges = trimmableRanges(`${text}\n`, identity ?? EXE);
      expect(ranges.length).toBe(trimmed ? 1 : 0);
      if (trimmed) {
        const [start, end] = text.split(" ")[0]!.split("-").map((hex) => BigInt(`0x${hex}`));
        expect(ranges[0]).toMatchObject({ start, end });
      }
    });
  }

  test("a whole smaps: every case above at once gives exactly the trimmable ones, in order", () => {
    const plain = cases.filter((c) => !c.exe);
    const ranges = trimmableRanges(plain.map((c) => c.text).join("\n"), EXE);
    expect(ranges.map((r) => r.start)).toEqual(plain.filter((c) => c.trimmed).map((c) => BigInt(`0x${c.text.split("-")[0]}`)));
    expect(ranges.reduce((sum, r) => sum + r.rssKb, 0)).toBe(4876 + 20348 + 4876);
  });
});

describe("deviceNumbers: st_dev as smaps prints it", () => {
  const table: Array<[bigint, { major: number; minor: number }]> = [
    [0xfe00n, { major: 0xfe, minor: 0 }],
    [0x0801n, { major: 8, minor: 1 }],
    [0x103n, { major: 1, minor: 3 }],
    // major 259 (NVMe), minor 2
    [(259n << 8n) | 2n, { major: 259, minor: 2 }],
    // major 0x1234, minor 0x12345: glibc's makedev puts the bits past 12 (major) and 8 (minor) high up
    [((0x1234n & 0xfffn) << 8n) | ((0x1234n & ~0xfffn) << 32n) | (0x12345n & 0xffn) | ((0x12345n & ~0xffn) << 12n), { major: 0x1234, minor: 0x12345 }],
  ];
  for (const [dev, expected] of table) {
    test(`0x${dev.toString(16)}`, () => expect(deviceNumbers(dev)).toEqual(expected));
  }
  test("this test process: /proc/self/exe's st_dev gives the device its own maps line names", () => {
    const stat = statSync("/proc/self/exe", { bigint: true });
    const line = readFileSync("/proc/self/maps", "utf8").split("\n").find((l) => l.split(/\s+/)[4] === String(stat.ino)) as string;
    const [major, minor] = line.split(/\s+/)[3]!.split(":").map((hex) => parseInt(hex, 16));
    expect(deviceNumbers(stat.dev)).toEqual({ major: major!, minor: minor! });
  });
});

describe("idleTrimStep: the one-shot timer's decision", () => {
  const table: Array<[string, Parameters<typeof idleTrimStep>[0], ReturnType<typeof idleTrimStep>]> = [
    ["quiet for the whole period: trim", { now: 10_000, lastActivityAt: 0, quietMs: 10_000, trimmedSinceActivity: false }, { action: "trim" }],
    ["a client came 4 s ago: wait the rest", { now: 10_000, lastActivityAt: 6_000, quietMs: 10_000, trimmedSinceActivity: false }, { action: "wait", ms: 6_000 }],
    ["already trimmed and nothing since: stay unarmed", { now: 50_000, lastActivityAt: 0, quietMs: 10_000, trimmedSinceActivity: true }, { action: "none" }],
    ["0 means never", { now: 50_000, lastActivityAt: 0, quietMs: 0, trimmedSinceActivity: false }, { action: "none" }],
  ];
  for (const [name, state, expected] of table) test(name, () => expect(idleTrimStep(state)).toEqual(expected));
});

describe("idleTrimmer: a quiet period past setTimeout's limit (2^31-1 ms, ~24.8 days)", () => {
  /**
   * Every delay idleTrimmer asks of setTimeout while `run` goes on (and for WATCH_MS after). Only calls made
   * from idle-trim.ts count: bun runs every file in one process, and a timer another file left running would
   * otherwise be counted too.
   */
  async function delaysAsked(run: () => () => void): Promise<number[]> {
    const WATCH_MS = 200;
    const asked: number[] = [];
    const real = globalThis.setTimeout;
    globalThis.setTimeout = ((fn: () => void, ms?: number, ...rest: unknown[]) => {
      if (new Error().stack?.includes("/src/server/idle-trim.ts:")) asked.push(ms ?? 0);
      return real(fn, ms, ...rest);
    }) as typeof setTimeout;
    let dispose = () => {};
    try {
      dispose = run();
      await Bun.sleep(WATCH_MS);
    } finally {
      dispose();
      globalThis.setTimeout = real;
    }
    return asked;
  }

  // Bun (like Node) turns a longer delay into 1 ms: each firing then found the period not over and re-armed,
  // a timer every millisecond for as long as the server ran, from settings.json's {"idleTrimAfterMs": 1e12}.
  test("1e12 ms: one timer within the limit, no re-arming loop, no trim", async () => {
    let trims = 0;
    const asked = await delaysAsked(() => {
      const trimmer = idleTrimmer(1e12, async () => void (trims += 1));
      trimmer.touch();
      return () => trimmer.dispose();
    });
    expect(asked.length).toBe(1);
    expect(asked[0]).toBeLessThanOrEqual(2 ** 31 - 1);
    expect(asked[0]).toBeGreaterThan(0);
    expect(trims).toBe(0);
  });

  test("a fractional quiet period still trims once", async () => {
    let trims = 0;
    await delaysAsked(() => {
      const trimmer = idleTrimmer(0.5, async () => void (trims += 1));
      return () => trimmer.dispose();
    });
    expect(trims).toBe(1);
  });
});

describe("readBoundedText: smaps is read with a bound, and only from a regular file", () => {
  const dir = mkdtempSync(join(tmpdir(), "berth-bounded-read-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  /** Past one 64 kB read chunk, so the bound is crossed mid-stream. */
  const BOUND = 150_000;
  const table: Array<[string, number, boolean]> = [
    ["empty", 0, true],
    ["one chunk", 1_000, true],
    ["exactly the bound, over several reads", BOUND, true],
    ["one byte past the bound", BOUND + 1, false],
    ["far past the bound", BOUND * 4, false],
  ];
  for (const [name, size, fits] of table) {
    test(`${name} (${size} bytes): ${fits ? "read whole" : "undefined"}`, () => {
      const path = join(dir, `file-${size}`);
      const text = "x".repeat(size);
      writeFileSync(path, text);
      expect(readBoundedText(path, BOUND)).toBe(fits ? text : undefined);
    });
  }

  test("what would hang or never end is refused at once: a FIFO with no writer, /dev/zero, a symlink", () => {
    const fifo = join(dir, "fifo");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const link = join(dir, "link");
    symlinkSync("/dev/zero", link);
    for (const path of [fifo, "/dev/zero", link]) {
      let code: unknown;
      try {
        readBoundedText(path, BOUND);
      } catch (error) {
        code = (error as { code?: unknown }).code;
      }
      expect(code).toBe("UNSAFE_STATE");
    }
  });

  test("this process's real smaps fits the bound and is whole (its last mapping's VmFlags is there)", () => {
    const smaps = readBoundedText("/proc/self/smaps", SMAPS_MAX_BYTES);
    expect(smaps).toBeDefined();
    expect(smaps!.length).toBeGreaterThan(1_000);
    expect(smaps!.trimEnd().split("\n").pop()).toStartWith("VmFlags:");
  });

  test("a smaps past the bound: the trim skips this round and unmaps nothing", async () => {
    const report = await trimOwnExecutable(1_000);
    expect(report).toEqual({ ranges: 0, rssKb: 0, failed: 0, skipped: "smapsTooLarge" });
  });
});
