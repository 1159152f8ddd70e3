// fs/* and system/info against a real `berth serve` over its Unix socket:
// round trips on a temporary tree, a 10 MiB file in ranges and appends, a
// folder root cannot write to (chattr +i), a symlink loop, names with
// newlines and non-UTF-8 bytes, and watches (kinds, unwatch, no watcher
// left behind by a closed connection — counted in the server's /proc).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, type TestHome } from "./helpers/berth.ts";
import { RpcClient, closeServedHome, openServedHome, type AppServer } from "./helpers/rpc-client.ts";

const MIB = 1024 * 1024;
const TEST_TIMEOUT_MS = 60_000;
/** The issue asks for fs/changed "within 1 s"; the wait is longer so a loaded CI machine cannot make it flaky (bench/ measures latency). */
const CHANGE_DEADLINE_MS = 10_000;
const CLEANUP_DEADLINE_MS = 10_000;

let home: TestHome;
let server: AppServer;
let client: RpcClient;

beforeAll(async () => {
  ({ home, server, client } = await openServedHome("berth-fs-"));
}, TEST_TIMEOUT_MS);

afterAll(async () => {
  await closeServedHome({ home, server, client });
});

function tree(): string {
  return mkdtempSync(join(tmpdir(), "berth-fs-tree-"));
}

const b64 = (data: string | Uint8Array) => Buffer.from(data).toString("base64");
const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

describe("fs round trips", () => {
  test("create, write, metadata, list, read, rename, remove", async () => {
    const root = tree();
    try {
      await client.call("fs/createDirectory", { path: join(root, "a/b/c"), recursive: true });
      expect(statSync(join(root, "a/b/c")).isDirectory()).toBe(true);
      expect((await client.callError("fs/createDirectory", { path: join(root, "a") })).data).toEqual({ errno: "EEXIST" });

      expect(await client.call("fs/writeFile", { path: join(root, "a/hello.txt"), data: b64("hello") })).toEqual({ size: 5 });
      expect(await client.call("fs/writeFile", { path: join(root, "a/hello.txt"), data: b64(" world"), append: true })).toEqual({ size: 11 });
      expect(readFileSync(join(root, "a/hello.txt"), "utf8")).toBe("hello world");
      expect(await client.call("fs/writeFile", { path: join(root, "new/deep/f"), data: b64("x"), createParents: true })).toEqual({ size: 1 });
      expect((await client.callError("fs/writeFile", { path: join(root, "missing/f"), data: b64("x") })).code).toBe(-32004);

      // A whole-file write keeps the mode and leaves no temp file behind.
      chmodSync(join(root, "a/hello.txt"), 0o640);
      await client.call("fs/writeFile", { path: join(root, "a/hello.txt"), data: b64("replaced") });
      expect(statSync(join(root, "a/hello.txt")).mode & 0o7777).toBe(0o640);
      expect(readdirSync(join(root, "a")).sort()).toEqual(["b", "hello.txt"]);

      const meta = await client.call("fs/getMetadata", { path: join(root, "a/hello.txt") });
      expect(meta).toMatchObject({ type: "file", size: 8, mode: 0o640 });
      expect(typeof meta.mtimeMs).toBe("number");
      symlinkSync("hello.txt", join(root, "a/link"));
      expect(await client.call("fs/getMetadata", { path: join(root, "a/link") })).toMatchObject({ type: "symlink", target: "hello.txt" });
      expect((await client.call("fs/getMetadata", { path: join(root, "a") })).type).toBe("directory");

      // Writing through a symlink edits its target and keeps the link.
      await client.call("fs/writeFile", { path: join(root, "a/link"), data: b64("via link") });
      expect(readlinkSync(join(root, "a/link"))).toBe("hello.txt");
      expect(readFileSync(join(root, "a/hello.txt"), "utf8")).toBe("via link");

      writeFileSync(join(root, "a/Z"), "");
      expect((await client.call("fs/readDirectory", { path: join(root, "a") })).entries).toEqual([
        { name: "Z", type: "file" },
        { name: "b", type: "directory" },
        { name: "hello.txt", type: "file" },
        { name: "link", type: "symlink" },
      ]);

      const read = await client.call("fs/readFile", { path: join(root, "a/hello.txt"), offset: 4, length: 3 });
      expect(read).toEqual({ data: b64("lin"), size: 8, eof: false });
      expect(await client.call("fs/readFile", { path: join(root, "a/hello.txt"), offset: 4 })).toEqual({ data: b64("link"), size: 8, eof: true });
      expect(await client.call("fs/readFile", { path: join(root, "a/hello.txt"), offset: 100 })).toEqual({ data: "", size: 8, eof: true });
      expect((await client.callError("fs/readFile", { path: join(root, "a") })).data).toEqual({ errno: "EISDIR" });

      await client.call("fs/rename", { from: join(root, "a/hello.txt"), to: join(root, "a/b/moved.txt") });
      expect(readFileSync(join(root, "a/b/moved.txt"), "utf8")).toBe("via link");
      await client.call("fs/remove", { path: join(root, "a/b/moved.txt") });
      expect(existsSync(join(root, "a/b/moved.txt"))).toBe(false);
      expect((await client.callError("fs/remove", { path: join(root, "a") })).data).toEqual({ errno: "ENOTEMPTY" });
      await client.call("fs/remove", { path: join(root, "a"), recursive: true });
      expect(existsSync(join(root, "a"))).toBe(false);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, TEST_TIMEOUT_MS);

  test("errors: relative path -32602, missing -32004 with errno, oversized read -32602", async () => {
    const relative = await client.callError("fs/readFile", { path: "etc/passwd" });
    expect(relative.code).toBe(-32602);
    expect(relative.message).toContain("path");
    const missing = await client.callError("fs/getMetadata", { path: "/nonexistent/berth/x" });
    expect(missing).toMatchObject({ code: -32004, data: { errno: "ENOENT" } });
    expect((await client.callError("fs/readFile", { path: "/etc/hostname", length: 4 * MIB + 1 })).code).toBe(-32602);
    expect((await client.callError("fs/writeFile", { path: "/tmp/x", data: "not base64!" })).code).toBe(-32602);
  });

  test("a 10 MiB file written in appends and read in ranges keeps its sha256", async () => {
    const root = tree();
    try {
      const content = randomBytes(10 * MIB);
      const path = join(root, "big.bin");
      const chunk = 512 * 1024; // base64 of a chunk stays under the 1 MiB frame limit
      for (let offset = 0; offset < content.length; offset += chunk) {
        await client.call("fs/writeFile", { path, data: b64(content.subarray(offset, offset + chunk)), append: true });
      }
      expect(sha256(readFileSync(path))).toBe(sha256(content));
      const parts: Buffer[] = [];
      let offset = 0;
      for (;;) {
        const { data, size, eof } = await client.call("fs/readFile", { path, offset, length: 4 * MIB });
        expect(size).toBe(content.length);
        parts.push(Buffer.from(data, "base64"));
        offset += parts.at(-1)!.length;
        if (eof) break;
      }
      expect(parts.length).toBe(3);
      expect(sha256(Buffer.concat(parts))).toBe(sha256(content));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, TEST_TIMEOUT_MS);

  test("a write into a folder that refuses it is -32003 (chattr +i: refused even for root)", async () => {
    const root = tree();
    const locked = join(root, "locked");
    mkdirSync(locked);
    writeFileSync(join(locked, "existing"), "old");
    const chattr = Bun.spawnSync(["chattr", "+i", locked]);
    try {
      if (chattr.exitCode !== 0) {
        // Not every filesystem supports the immutable flag; without it root bypasses permission checks.
        console.warn(`skipping: chattr +i failed (${chattr.stderr.toString().trim()})`);
        return;
      }
      for (const params of [
        { path: join(locked, "new"), data: b64("x") },
        { path: join(locked, "existing"), data: b64("x") },
      ]) {
        const error = await client.callError("fs/writeFile", params);
        expect(error.code).toBe(-32003);
        expect(error.data).toEqual({ errno: "EPERM" });
      }
      expect(readFileSync(join(locked, "existing"), "utf8")).toBe("old");
      expect(readdirSync(locked)).toEqual(["existing"]);
      expect((await client.callError("fs/remove", { path: join(locked, "existing") })).code).toBe(-32003);
    } finally {
      Bun.spawnSync(["chattr", "-i", locked]);
      rmSync(root, { recursive: true, force: true });
    }
  });

  test("a symlink loop is reported, not followed forever", async () => {
    const root = tree();
    try {
      symlinkSync("b", join(root, "a"));
      symlinkSync("a", join(root, "b"));
      expect(await client.call("fs/getMetadata", { path: join(root, "a") })).toMatchObject({ type: "symlink", target: "b" });
      expect(await client.callError("fs/readFile", { path: join(root, "a") })).toMatchObject({ code: -32602, data: { errno: "ELOOP" } });
      expect(await client.callError("fs/writeFile", { path: join(root, "a"), data: b64("x") })).toMatchObject({ data: { errno: "ELOOP" } });
      expect(await client.callError("fs/readDirectory", { path: join(root, "a") })).toMatchObject({ data: { errno: "ELOOP" } });
      expect((await client.call("fs/readDirectory", { path: root })).entries).toEqual([
        { name: "a", type: "symlink" },
        { name: "b", type: "symlink" },
      ]);
      expect((await client.call("system/info")).hostname).toBeString();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test("names with a newline and non-UTF-8 bytes are listed (nameBase64 beside a replacement-character name)", async () => {
    const root = tree();
    try {
      const raw = Buffer.from([0x62, 0xff, 0x0a, 0xfe]); // "b", invalid, newline, invalid
      writeFileSync(Buffer.concat([Buffer.from(`${root}/`), raw]), "x");
      writeFileSync(join(root, "a\nnewline"), "y");
      const { entries } = await client.call("fs/readDirectory", { path: root });
      expect(entries).toEqual([
        { name: "a\nnewline", type: "file" },
        { name: "b\uFFFD\n\uFFFD", nameBase64: raw.toString("base64"), type: "file" },
      ]);
      expect(await client.call("fs/readFile", { path: join(root, "a\nnewline") })).toMatchObject({ data: b64("y") });
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

test("special files and a vanishing watched folder do not hang or crash the server", async () => {
  const root = tree();
  try {
    const fifo = join(root, "fifo");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    expect(await client.callError("fs/readFile", { path: fifo })).toMatchObject({ code: -32602, data: { errno: "EINVAL" } });
    expect(await client.callError("fs/readFile", { path: "/dev/zero" })).toMatchObject({ code: -32602, data: { errno: "EINVAL" } });
    // A whole-file write must not rename a regular file over a FIFO or a device.
    expect(await client.callError("fs/writeFile", { path: fifo, data: b64("x") })).toMatchObject({ code: -32602, data: { errno: "EINVAL" } });
    expect(await client.callError("fs/writeFile", { path: "/dev/null", data: b64("x") })).toMatchObject({ code: -32602 });
    expect(statSync("/dev/null").isCharacterDevice()).toBe(true);
    expect(statSync(fifo).isFIFO()).toBe(true);
    // Appending to a FIFO nobody reads fails at once (ENXIO) instead of blocking.
    expect((await client.callError("fs/writeFile", { path: fifo, data: b64("x"), append: true })).data).toEqual({ errno: "ENXIO" });

    const doomed = join(root, "doomed");
    mkdirSync(join(doomed, "inner"), { recursive: true });
    const { watchId } = await client.call("fs/watch", { path: doomed, recursive: true });
    rmSync(doomed, { recursive: true });
    await client.waitNotification("fs/changed", (p) => p.watchId === watchId, CHANGE_DEADLINE_MS);
    expect((await client.call("system/info")).hostname).toBeString();
    await client.call("fs/unwatch", { watchId }).catch(() => {}); // may have ended on its own
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}, TEST_TIMEOUT_MS);

test("malformed params to every method are -32602 naming the param; the server keeps answering", async () => {
  const methods = ["fs/readFile", "fs/writeFile", "fs/getMetadata", "fs/readDirectory", "fs/createDirectory", "fs/remove", "fs/rename", "fs/watch", "fs/unwatch", "tunnel/open", "tunnel/write", "tunnel/close"];
  for (const method of methods) {
    for (const params of [[1, 2], "x", null, {}, { path: 7, from: "rel", to: 1, watchId: 3, host: 5, port: "80", tunnelId: {}, data: "%%" }]) {
      const error = await client.callError(method, params);
      expect([method, error.code]).toEqual([method, -32602]);
      expect(error.message).toStartWith("invalid params: ");
    }
  }
  expect((await client.call("system/info", { ignored: true })).hostname).toBeString();
});

test("system/info has every field of the spec", async () => {
  const info = await client.call("system/info");
  expect(Object.keys(info).sort()).toEqual(["arch", "cpus", "disk", "home", "hostname", "loadavg", "memory", "os", "release", "shell", "uptimeS"]);
  expect(info.os).toBe(process.platform);
  expect(info.arch).toBe(process.arch);
  expect(info.cpus).toBeGreaterThan(0);
  expect(info.loadavg).toHaveLength(3);
  expect(info.memory.total).toBeGreaterThan(info.memory.free);
  expect(info.home).toBe(home.env.HOME ?? homedir());
  expect(info.disk.path).toBe(info.home);
  expect(info.disk.total).toBeGreaterThanOrEqual(info.disk.free);
  expect(info.shell.startsWith("/")).toBe(true);
});

/** inotify watch descriptors held by a process (Bun shares one inotify fd per process, so count watches, not fds). */
function inotifyWatches(pid: number): number {
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== "anon_inode:inotify") continue;
      count += readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8").split("\n").filter((line) => line.startsWith("inotify wd:")).length;
    } catch {
      // fd closed while counting
    }
  }
  return count;
}

const openFds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

describe("fs/watch", () => {
  test("created, modified, deleted (recursively), then unwatch stops them", async () => {
    const root = tree();
    try {
      mkdirSync(join(root, "sub"));
      const { watchId } = await client.call("fs/watch", { path: root, recursive: true });
      const change = (path: string, kind: string) =>
        client.waitNotification("fs/changed", (p) => p.watchId === watchId && p.changes.some((c: any) => c.path === path && c.kind === kind), CHANGE_DEADLINE_MS);

      const file = join(root, "f.txt");
      writeFileSync(file, "1");
      await change(file, "created");
      await Bun.write(file, "22"); // truncate + write on an existing file
      await change(file, "modified");
      rmSync(file);
      await change(file, "deleted");
      writeFileSync(join(root, "sub", "deep.txt"), "x");
      await change(join(root, "sub", "deep.txt"), "created");
      // A folder made after the watch started is watched too (once its own creation was seen).
      mkdirSync(join(root, "later"));
      await change(join(root, "later"), "created");
      writeFileSync(join(root, "later", "inside.txt"), "x");
      await change(join(root, "later", "inside.txt"), "created");

      // A changed path that is not UTF-8 comes with pathBase64.
      const rawPath = Buffer.concat([Buffer.from(`${root}/`), Buffer.from([0x6e, 0xff])]);
      writeFileSync(rawPath, "x");
      const raw = await client.waitNotification(
        "fs/changed",
        (p) => p.watchId === watchId && p.changes.some((c: any) => c.pathBase64 === rawPath.toString("base64")),
        CHANGE_DEADLINE_MS,
      );
      expect(raw.changes.find((c: any) => c.pathBase64)).toEqual({ path: `${root}/n\uFFFD`, pathBase64: rawPath.toString("base64"), kind: "created" });

      await client.call("fs/unwatch", { watchId });
      expect((await client.callError("fs/unwatch", { watchId })).code).toBe(-32004);
      writeFileSync(join(root, "after-unwatch"), "x");
      // A second watch's event proves the server has processed the first write; none came for the old watch.
      const other = tree();
      try {
        const second = await client.call("fs/watch", { path: other });
        writeFileSync(join(other, "marker"), "x");
        await client.waitNotification("fs/changed", (p) => p.watchId === second.watchId, CHANGE_DEADLINE_MS);
        await client.call("fs/unwatch", { watchId: second.watchId });
      } finally {
        rmSync(other, { recursive: true, force: true });
      }
      expect(client.notifications.filter((n) => n.params.watchId === watchId)).toEqual([]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, TEST_TIMEOUT_MS);

  test("a closed connection leaves no watcher behind", async () => {
    const root = tree();
    try {
      for (const dir of ["x", "y", "z"]) mkdirSync(join(root, dir));
      const fdsBefore = openFds(server.pid);
      const watchesBefore = inotifyWatches(server.pid);
      const other = await RpcClient.open(server.socket);
      await other.call("fs/watch", { path: root, recursive: true });
      await other.call("fs/watch", { path: join(root, "x") });
      expect(inotifyWatches(server.pid)).toBeGreaterThanOrEqual(watchesBefore + 4);
      other.destroy(); // abrupt: no close frame
      expect(await eventually(() => inotifyWatches(server.pid) === watchesBefore, CLEANUP_DEADLINE_MS)).toBe(true);
      // The inotify fd itself is shared and may stay open; nothing else may remain.
      expect(await eventually(() => openFds(server.pid) <= fdsBefore + 1, CLEANUP_DEADLINE_MS)).toBe(true);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, TEST_TIMEOUT_MS);

  test("watching a missing path is -32004", async () => {
    expect(await client.callError("fs/watch", { path: "/nonexistent/berth" })).toMatchObject({ code: -32004, data: { errno: "ENOENT" } });
  });
});
