/**
 * src/platform/sys.ts against node:fs: the same calls on the same real files (regular, folder, symlink,
 * dangling link, FIFO, socket, device, /proc) must give the same results and the same errors.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as nodeFs from "node:fs";
import { mkdtempSync } from "node:fs";
import { constants as osConstants, tmpdir } from "node:os";
import { ERRNO_NAMES } from "../src/platform/errno.ts";
import { join } from "node:path";
import * as sys from "../src/platform/sys.ts";

let dir: string;
let server: ReturnType<typeof Bun.listen> | undefined;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "berth-sys-"));
  nodeFs.writeFileSync(join(dir, "file"), "hello\nwörld\n", { mode: 0o640 });
  nodeFs.mkdirSync(join(dir, "folder"), { mode: 0o750 });
  nodeFs.symlinkSync(join(dir, "file"), join(dir, "link"));
  nodeFs.symlinkSync(join(dir, "link"), join(dir, "link2"));
  nodeFs.symlinkSync(join(dir, "nowhere"), join(dir, "dangling"));
  Bun.spawnSync(["mkfifo", join(dir, "fifo")]);
  server = Bun.listen({ unix: join(dir, "sock"), socket: { data() {} } });
});

afterAll(() => {
  server?.stop(true);
  nodeFs.rmSync(dir, { recursive: true, force: true });
});

/** The error node:fs and sys.ts throw for the same call, or "ok". */
function outcome(call: () => unknown): unknown {
  try {
    call();
    return "ok";
  } catch (error) {
    const e = error as { code?: string; message?: string; syscall?: string; path?: string; errno?: number };
    return { code: e.code, syscall: e.syscall, path: e.path, errno: e.errno, message: e.message };
  }
}

/** "undefined", "value", or the error code a call ends with. */
function kind(call: () => unknown): string {
  try {
    return call() === undefined ? "undefined" : "value";
  } catch (error) {
    return String((error as { code?: string }).code);
  }
}

function statFields(stat: { dev: number; ino: number; mode: number; nlink: number; uid: number; gid: number; rdev: number; size: number; mtimeMs: number }) {
  const s = stat as unknown as Record<string, () => boolean>;
  return {
    dev: stat.dev,
    ino: stat.ino,
    mode: stat.mode,
    nlink: stat.nlink,
    uid: stat.uid,
    gid: stat.gid,
    rdev: stat.rdev,
    size: stat.size,
    mtimeMs: Math.floor(stat.mtimeMs),
    types: ["isFile", "isDirectory", "isSymbolicLink", "isCharacterDevice", "isBlockDevice", "isFIFO", "isSocket"].filter((t) => s[t]!.call(stat)),
  };
}

describe("sys.ts answers as node:fs does", () => {
  const paths = () => ["file", "folder", "link", "link2", "dangling", "fifo", "sock", "missing", "file/below"].map((p) => join(dir, p)).concat(["/dev/null", "/proc/self/exe", "/"]);

  test("statSync, lstatSync and existsSync on every kind of path", () => {
    expect(paths().length).toBeGreaterThan(10);
    for (const path of paths()) {
      for (const name of ["statSync", "lstatSync"] as const) {
        const expected = outcome(() => nodeFs[name](path));
        expect({ path, name, outcome: outcome(() => sys[name](path)) }).toEqual({ path, name, outcome: expected });
        if (expected === "ok") expect(statFields(sys[name](path))).toEqual(statFields(nodeFs[name](path)));
        expect(kind(() => sys[name](path, { throwIfNoEntry: false }))).toEqual(kind(() => nodeFs[name](path, { throwIfNoEntry: false })));
      }
      expect({ path, exists: sys.existsSync(path) }).toEqual({ path, exists: nodeFs.existsSync(path) });
    }
  });

  test("fstatSync on open descriptors; a closed one is EBADF", () => {
    for (const path of [join(dir, "file"), join(dir, "folder"), "/dev/null"]) {
      const fd = nodeFs.openSync(path, "r");
      try {
        expect(statFields(sys.fstatSync(fd))).toEqual(statFields(nodeFs.fstatSync(fd)));
      } finally {
        nodeFs.closeSync(fd);
      }
    }
    const fd = nodeFs.openSync("/dev/null", "r");
    nodeFs.closeSync(fd);
    expect((outcome(() => sys.fstatSync(fd)) as { code: string }).code).toBe("EBADF");
  });

  test("openSync: the same errors (ELOOP under O_NOFOLLOW, ENXIO on a socket, EEXIST for wx, EISDIR, ENOTDIR)", () => {
    const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK, O_WRONLY } = nodeFs.constants;
    const cases: [string, string | number][] = [
      [join(dir, "link"), O_RDONLY | O_NOFOLLOW | O_NONBLOCK],
      [join(dir, "sock"), O_RDONLY | O_NONBLOCK],
      [join(dir, "file"), "wx"],
      [join(dir, "folder"), O_WRONLY],
      [join(dir, "file/below"), "r"],
      [join(dir, "missing"), "r"],
    ];
    for (const [path, flags] of cases) {
      const expected = outcome(() => nodeFs.openSync(path, flags));
      expect(expected).not.toBe("ok");
      expect({ path, flags, outcome: outcome(() => sys.openSync(path, flags)) }).toEqual({ path, flags, outcome: expected });
    }
    expect(sys.constants.O_NOFOLLOW).toBe(nodeFs.constants.O_NOFOLLOW);
    expect(sys.constants.O_DIRECTORY).toBe(nodeFs.constants.O_DIRECTORY);
    expect(sys.constants.O_NONBLOCK).toBe(nodeFs.constants.O_NONBLOCK);
  });

  test("a NUL inside a path is refused, never cut short", () => {
    nodeFs.writeFileSync(join(dir, "cut"), "x");
    const path = `${join(dir, "cut")}\0tail`;
    for (const call of [() => sys.statSync(path), () => sys.openSync(path, "r"), () => sys.readFileSync(path, "utf8"), () => sys.rmSync(path, { force: true })]) {
      expect((outcome(call) as { code: string }).code).toBe("ERR_INVALID_ARG_VALUE");
    }
    expect(sys.existsSync(path)).toBe(false);
    expect(nodeFs.existsSync(join(dir, "cut"))).toBe(true);
  });

  test("descriptors are close-on-exec, as node:fs opens them", () => {
    const fd = sys.openSync(join(dir, "file"), "r");
    try {
      const flags = /flags:\s+(\d+)/.exec(nodeFs.readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))?.[1];
      expect(flags).toBeDefined();
      expect(Number.parseInt(flags as string, 8) & 0o2000000).toBe(0o2000000);
    } finally {
      sys.closeSync(fd);
    }
  });

  test("write, fsync, read and pread round-trip; close twice is EBADF", () => {
    const path = join(dir, "rw");
    const fd = sys.openSync(path, "wx", 0o600);
    expect(sys.writeSync(fd, "abcdef")).toBe(6);
    expect(sys.writeSync(fd, Buffer.from("xyz123"), 3)).toBe(3);
    expect(sys.writeSync(fd, new Uint8Array([65, 66, 67, 68]), 1, 2)).toBe(2);
    sys.fsyncSync(fd);
    sys.closeSync(fd);
    expect((outcome(() => sys.closeSync(fd)) as { code: string }).code).toBe("EBADF");
    expect(nodeFs.readFileSync(path, "utf8")).toBe("abcdef123BC");
    expect(nodeFs.statSync(path).mode & 0o777).toBe(0o600);
    const rfd = sys.openSync(path, "r");
    try {
      const buffer = Buffer.alloc(8);
      expect(sys.readSync(rfd, buffer, 2, 4, 6)).toBe(4);
      expect(buffer.subarray(2, 6).toString()).toBe("123B");
      expect(sys.readSync(rfd, buffer, 0, 3)).toBe(3);
      expect(buffer.subarray(0, 3).toString()).toBe("abc");
    } finally {
      sys.closeSync(rfd);
    }
  });

  test("readFileSync: files and /proc (size 0 until read), multi-byte text across chunks", () => {
    const big = "ä".repeat(70_000);
    nodeFs.writeFileSync(join(dir, "big"), big);
    expect(sys.readFileSync(join(dir, "big"), "utf8")).toBe(big);
    expect(sys.readFileSync(join(dir, "file"), "utf8")).toBe(nodeFs.readFileSync(join(dir, "file"), "utf8"));
    const bytes = Uint8Array.from({ length: 256 * 40 }, (_, i) => i % 256);
    nodeFs.writeFileSync(join(dir, "bytes"), bytes);
    expect(sys.readFileSync(join(dir, "bytes"), "latin1")).toBe(nodeFs.readFileSync(join(dir, "bytes"), "latin1"));
    expect(sys.latin1(new Uint8Array([0x41, 0x80, 0x9f, 0xe9, 0xff]))).toBe("A\u0080\u009fé\u00ff");
    const status = sys.readFileSync("/proc/self/status", "utf8");
    expect(status).toContain(`Pid:\t${process.pid}\n`);
    expect(outcome(() => sys.readFileSync(join(dir, "missing"), "utf8"))).toEqual(outcome(() => nodeFs.readFileSync(join(dir, "missing"), "utf8")));
  });

  test("readlinkSync, realpathSync, readdirSync", () => {
    for (const path of [join(dir, "link"), join(dir, "link2"), join(dir, "dangling"), join(dir, "file"), join(dir, "missing")]) {
      expect(outcome(() => sys.readlinkSync(path))).toEqual(outcome(() => nodeFs.readlinkSync(path)));
      if (outcome(() => nodeFs.readlinkSync(path)) === "ok") expect(sys.readlinkSync(path)).toBe(nodeFs.readlinkSync(path, "utf8"));
      expect(outcome(() => sys.realpathSync(path))).toEqual(outcome(() => nodeFs.realpathSync(path)));
      if (outcome(() => nodeFs.realpathSync(path)) === "ok") expect(sys.realpathSync(path)).toBe(nodeFs.realpathSync(path));
    }
    expect(sys.readdirSync(dir).sort()).toEqual(nodeFs.readdirSync(dir).sort());
    expect(sys.readdirSync("/proc/self/fd").length).toBeGreaterThan(2);
    expect(outcome(() => sys.readdirSync(join(dir, "missing")))).toEqual(outcome(() => nodeFs.readdirSync(join(dir, "missing"))));
    expect(outcome(() => sys.readdirSync(join(dir, "file")))).toEqual(outcome(() => nodeFs.readdirSync(join(dir, "file"))));
  });

  test("mkdirSync (plain and recursive), renameSync, rmSync", () => {
    const deep = join(dir, "a", "b", "c");
    expect(outcome(() => sys.mkdirSync(deep, { mode: 0o700 }))).toEqual(outcome(() => nodeFs.mkdirSync(deep, { mode: 0o700 })));
    sys.mkdirSync(deep, { recursive: true, mode: 0o700 });
    expect(nodeFs.statSync(deep).isDirectory()).toBe(true);
    expect(nodeFs.statSync(join(dir, "a")).mode & 0o777).toBe(0o700);
    sys.mkdirSync(deep, { recursive: true, mode: 0o700 });
    expect(outcome(() => sys.mkdirSync(deep))).toEqual(outcome(() => nodeFs.mkdirSync(deep)));
    expect(outcome(() => sys.mkdirSync(join(dir, "file", "x"), { recursive: true }))).toEqual(outcome(() => nodeFs.mkdirSync(join(dir, "file", "x"), { recursive: true })));
    nodeFs.writeFileSync(join(dir, "r1"), "1");
    sys.renameSync(join(dir, "r1"), join(dir, "r2"));
    expect(nodeFs.readFileSync(join(dir, "r2"), "utf8")).toBe("1");
    expect(outcome(() => sys.renameSync(join(dir, "r1"), join(dir, "r3")))).toEqual(outcome(() => nodeFs.renameSync(join(dir, "r1"), join(dir, "r3"))));
    sys.rmSync(join(dir, "r2"));
    expect(nodeFs.existsSync(join(dir, "r2"))).toBe(false);
    sys.rmSync(join(dir, "r2"), { force: true });
    expect(outcome(() => sys.rmSync(join(dir, "r2")))).toEqual(outcome(() => nodeFs.rmSync(join(dir, "r2"))));
    expect(outcome(() => sys.rmSync(join(dir, "folder")))).toEqual(outcome(() => nodeFs.rmSync(join(dir, "folder"))));
    sys.rmSync(join(dir, "a"), { recursive: true, force: true });
    expect(nodeFs.existsSync(join(dir, "a"))).toBe(false);
  });

  test("the errno table names each number as node:os does", () => {
    const known = osConstants.errno as Record<string, number>;
    let checked = 0;
    for (const [number, [code]] of Object.entries(ERRNO_NAMES)) {
      if (known[code] === undefined) continue;
      expect({ code, number: Number(number) }).toEqual({ code, number: known[code] as number });
      checked += 1;
    }
    expect(checked).toBeGreaterThan(70);
    for (const code of ["ENOENT", "ESRCH", "EAGAIN", "ELOOP", "ENXIO", "EDQUOT", "ENOSPC", "EROFS", "ENOTEMPTY"]) {
      expect(Object.values(ERRNO_NAMES).some(([name]) => name === code)).toBe(true);
    }
  });

  test("reading /proc/<pid>/stat of a process that ended after the open is ESRCH, as node:fs says", async () => {
    const codes: string[] = [];
    for (const fs of [sys, nodeFs] as const) {
      const child = Bun.spawn(["sleep", "30"], { stdio: ["ignore", "ignore", "ignore"] });
      const fd = fs.openSync(`/proc/${child.pid}/stat`, "r");
      try {
        child.kill("SIGKILL");
        await child.exited;
        codes.push(String((outcome(() => fs.readSync(fd, new Uint8Array(512), 0, 512, null)) as { code?: string }).code));
      } finally {
        fs.closeSync(fd);
      }
    }
    expect(codes).toEqual(["ESRCH", "ESRCH"]);
  });

  test("statFromStatx decodes a real struct statx (device numbers as glibc's makedev)", () => {
    const stat = sys.statSync("/dev/null");
    expect(stat.rdev).toBe(nodeFs.statSync("/dev/null").rdev);
    expect(stat.isCharacterDevice()).toBe(true);
    expect(sys.sysError(2, "open", "/x").message).toBe("ENOENT: no such file or directory, open '/x'");
    expect(sys.sysError(9999, "read").code).toBe("E9999");
  });
});
