// The pure decisions of the fs/*, system/info and tunnel/* families, as tables.
import { describe, expect, test } from "bun:test";
import { codeForErrno, textField } from "../src/server/api/fs-errors.ts";
import { base64, base64Transient } from "../src/server/api/params.ts";
import { ChangeBatch, CHANGES_PER_BATCH_MAX, mergeKind, type ChangeKind } from "../src/server/api/fs-watch.ts";
import { shellFromPasswd } from "../src/server/api/system.ts";
import { allowHostsOf, DEFAULT_ALLOW_HOSTS, hostAllowed } from "../src/server/api/tunnel.ts";

test("errno → spec code", () => {
  const cases: Array<[string, number]> = [
    ["ENOENT", -32004],
    ["EACCES", -32003],
    ["EPERM", -32003],
    ["EROFS", -32003],
    ["ENOSPC", -32001],
    ["EMFILE", -32001],
    ["EEXIST", -32602],
    ["ENOTDIR", -32602],
    ["ELOOP", -32602],
    ["ENOTEMPTY", -32602],
  ];
  for (const [errno, code] of cases) expect([errno, codeForErrno(errno)]).toEqual([errno, code]);
});

test("bytes given back as text: base64 only beside names that are not UTF-8", () => {
  expect(textField("name", Buffer.from("plain"))).toEqual({ name: "plain" });
  expect(textField("name", Buffer.from("é\nx"))).toEqual({ name: "é\nx" });
  expect(textField("path", Buffer.from([0x2f, 0xff]))).toEqual({ path: "/\uFFFD", pathBase64: "L/8=" });
  expect(textField("name", Buffer.from([0xc3]))).toEqual({ name: "\uFFFD", nameBase64: "ww==" });
});

test("two changes to one path within a batch", () => {
  const cases: Array<[ChangeKind | undefined, ChangeKind, ChangeKind]> = [
    [undefined, "created", "created"],
    ["created", "modified", "created"],
    ["created", "deleted", "deleted"],
    ["deleted", "created", "modified"],
    ["modified", "deleted", "deleted"],
    ["modified", "modified", "modified"],
  ];
  for (const [previous, next, merged] of cases) expect([previous, next, mergeKind(previous, next)]).toEqual([previous, next, merged]);
});

test("a batch keeps first-seen order, merges per path and caps its size", () => {
  const batch = new ChangeBatch();
  batch.add(Buffer.from("/t/a"), "created");
  batch.add(Buffer.from("/t/b"), "modified");
  batch.add(Buffer.from("/t/a"), "modified");
  expect(batch.toJSON()).toEqual([
    { path: "/t/a", kind: "created" },
    { path: "/t/b", kind: "modified" },
  ]);
  const full = new ChangeBatch();
  for (let i = 0; i <= CHANGES_PER_BATCH_MAX; i++) full.add(Buffer.from(`/t/${i}`), "created");
  expect(full.size).toBe(CHANGES_PER_BATCH_MAX);
  expect(full.overflow).toBe(true);
});

test("a batch counts what it holds; a new path that does not fit the room left is dropped as overflow, a known one still merges", () => {
  const batch = new ChangeBatch();
  const cost = batch.add(Buffer.from("/t/a"), "created");
  expect(cost).toBeGreaterThan(2 * "/t/a".length);
  expect(batch.bytes).toBe(cost);
  expect(batch.add(Buffer.from("/t/b"), "created", cost - 1)).toBe(0);
  expect(batch.overflow).toBe(true);
  expect(batch.add(Buffer.from("/t/a"), "deleted", 0)).toBe(0);
  expect(batch.toJSON()).toEqual([{ path: "/t/a", kind: "deleted" }]);
  expect(batch.bytes).toBe(cost);
});

describe("tunnels.allowHosts", () => {
  test("hosts allowed by the default list", () => {
    const cases: Array<[string, boolean]> = [
      ["127.0.0.1", true],
      ["::1", true],
      ["[::1]", true],
      ["LOCALHOST", true],
      ["127.0.0.2", false],
      ["0.0.0.0", false],
      ["10.0.0.1", false],
      ["localhost.example.com", false],
      ["", false],
    ];
    for (const [host, allowed] of cases) expect([host, hostAllowed(host, DEFAULT_ALLOW_HOSTS)]).toEqual([host, allowed]);
  });

  test("the settings list replaces the default; a wrong type is refused", () => {
    expect(allowHostsOf({})).toEqual(DEFAULT_ALLOW_HOSTS);
    expect(allowHostsOf({ tunnels: {} })).toEqual(DEFAULT_ALLOW_HOSTS);
    expect(allowHostsOf({ tunnels: { allowHosts: ["10.0.0.5"] } })).toEqual(["10.0.0.5"]);
    expect(() => allowHostsOf({ tunnels: { allowHosts: "127.0.0.1" } })).toThrow("allowHosts");
  });
});

test("login shell from passwd text", () => {
  const passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nodd:x:7:7::/:\n";
  expect(shellFromPasswd(passwd, 0)).toBe("/bin/bash");
  expect(shellFromPasswd(passwd, 65534)).toBe("/usr/sbin/nologin");
  expect(shellFromPasswd(passwd, 7)).toBeUndefined();
  expect(shellFromPasswd(passwd, 1000)).toBeUndefined();
});

test("the base64 params check: standard alphabet, optional padding, nothing else", () => {
  const cases: Array<[string, boolean]> = [
    ["", true],
    ["Zm9v", true],
    ["Zm8=", true],
    ["Zm8", true],
    ["Zg==", true],
    ["Zg", true],
    ["+/+/", true],
    ["Z", false],
    ["Zg===", false],
    ["Zm9v\n", false],
    ["Zm 9v", false],
    ["Zm9!", false],
    ["Z=m9", false],
    ["ab-_", false],
    ["é123", false],
  ];
  const outcome = (check: typeof base64, value: string) => {
    try {
      return Buffer.from(check(value, "data")).toString("hex"); // a copy: the transient bytes get reused
    } catch {
      return "rejected";
    }
  };
  const long = Buffer.alloc(700 * 1024, 0xc3).toString("base64");
  const all: Array<[string, boolean]> = [...cases, [long, true], [`${long}!`, false], ["Zm9v", true]];
  for (const [value, ok] of all) {
    expect([value.slice(0, 20), outcome(base64, value) !== "rejected"]).toEqual([value.slice(0, 20), ok]);
    // The transient variant (tunnel/write) follows the same rules and gives the same bytes, after a big decode too.
    expect(outcome(base64Transient, value)).toBe(outcome(base64, value));
  }
  expect(Buffer.from(base64("Zm9vYg", "data")).toString()).toBe("foob");
});
