// The release build end to end: `bun run build.ts --release --host` writes what
// a static host serves, and the built install.sh installs it under dash, bash
// and busybox sh from a loopback HTTP server — or changes nothing when it fails.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { argvOf, BUN, makeHome, processesWithArg, ROOT, TARGET, type TestHome, treeSnapshot } from "./helpers/berth.ts";
import { foldersAndServers, serveDirectory } from "./helpers/release-server.ts";

const OLD = "1.0.0";
const NEW = "1.1.0";
const ASSET = `berth-${TARGET}.gz`;
const SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin";
const TEST_TIMEOUT_MS = 120_000;
const has = (cmd: string) => Bun.which(cmd, { PATH: SYSTEM_PATH }) !== null;
const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

const { tempDir, serve } = foldersAndServers(afterAll, "berth-release-");
const homes: TestHome[] = [];
afterEach(async () => {
  for (const home of homes.splice(0)) await home.cleanup();
});

// Two real releases in one folder, built by real subprocesses; the server runs first so its URL can be baked in.
const outdir = tempDir("out");
const server = await serve(outdir);
const buildSeconds: Record<string, number> = {};
let buildWarnings = "";
for (const version of [OLD, NEW]) {
  const started = performance.now();
  const build = Bun.spawnSync({
    cmd: [BUN, "run", "build.ts", "--release", "--host", "--outdir", outdir, "--base-url", `${server.url}/`],
    cwd: ROOT,
    env: { ...process.env, BERTH_BUILD_VERSION: version },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  if (build.exitCode !== 0) throw new Error(`release build of ${version} failed: ${build.stderr.toString()}`);
  buildSeconds[version] = (performance.now() - started) / 1000;
  buildWarnings += build.stderr.toString();
}
// Without BERTH_SIGNING_KEY the build signs with the development key it made in dist/ (and reuses).
const devKey = createPublicKey(createPrivateKey(readFileSync(join(ROOT, "dist", "dev-signing-key.pem"))));
const devPublicKey = devKey.export({ type: "spki", format: "der" }).toString("base64");

function newHome(): TestHome {
  const t = makeHome({ install: false, prefix: "berth-release-" });
  homes.push(t);
  return t;
}

const pkg = (t: TestHome, ...parts: string[]) => t.path("packages", "standalone", ...parts);
const linkOf = (t: TestHome) => join(t.env.BERTH_INSTALL_DIR as string, "berth");

/** Runs an install script the way `curl … | sh -s -- ARGS` does: the script on stdin. */
async function runScript(t: TestHome, shell: string[], script: string, args: string[], env: Record<string, string>) {
  const started = performance.now();
  const child = Bun.spawn({
    cmd: [...shell, "-s", "--", ...args],
    env: { ...t.env, SHELL: "/bin/sh", PATH: SYSTEM_PATH, ...env },
    stdin: Bun.file(script),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  const last = stdout.trimEnd().split("\n").pop() ?? "";
  let json: any;
  try {
    json = JSON.parse(last);
  } catch {
    json = undefined;
  }
  return { code, stdout, stderr, json, seconds: (performance.now() - started) / 1000 };
}

const SCRIPT = join(outdir, "install.sh");
const run = (t: TestHome, shell: string[], args: string[] = [], env: Record<string, string> = {}) => runScript(t, shell, SCRIPT, args, env);

/** Every path under $HOME with type, link target, size and mtime: "exactly as before". */
function snapshot(t: TestHome): string[] {
  return treeSnapshot(t.env.HOME as string);
}

/** A copy of the release folder with one file changed, for the failure cases. */
function brokenRelease(change: (dir: string) => void): string {
  const dir = tempDir("broken");
  writeFileSync(join(dir, "latest.json"), readFileSync(join(outdir, "latest.json")));
  mkdirSync(join(dir, NEW));
  writeFileSync(join(dir, "latest.json.sig"), readFileSync(join(outdir, "latest.json.sig")));
  for (const file of [ASSET, "SHA256SUMS", "manifest.json", "manifest.json.sig"]) writeFileSync(join(dir, NEW, file), readFileSync(join(outdir, NEW, file)));
  change(dir);
  return dir;
}

describe("bun run build.ts --release --host", () => {
  test("writes install.sh, latest.json, the manifest, SHA256SUMS and the gzipped binary, each signed", () => {
    const script = readFileSync(SCRIPT, "utf8");
    expect(script).not.toContain("__BERTH_RELEASE_BASE_URL__");
    expect(script).toContain(`BERTH_DEFAULT_BASE_URL="${server.url}"`);
    expect(script).toContain(`BERTH_PUBLIC_KEYS="${devPublicKey}"`);
    expect(lstatSync(SCRIPT).mode & 0o111).not.toBe(0);
    expect(JSON.parse(readFileSync(join(outdir, "latest.json"), "utf8"))).toEqual({ version: NEW });
    expect(verify(null, readFileSync(join(outdir, "latest.json")), devKey, Buffer.from(readFileSync(join(outdir, "latest.json.sig"), "utf8"), "base64"))).toBe(true);
    for (const version of [OLD, NEW]) {
      const gz = readFileSync(join(outdir, version, ASSET));
      const binary = Bun.gunzipSync(gz);
      const manifestBytes = readFileSync(join(outdir, version, "manifest.json"));
      expect(JSON.parse(manifestBytes.toString())).toEqual({
        version,
        assets: [{ target: TARGET, file: ASSET, sha256: sha256(gz), size: gz.byteLength, binarySha256: sha256(binary), binarySize: binary.byteLength }],
      });
      const sig = Buffer.from(readFileSync(join(outdir, version, "manifest.json.sig"), "utf8"), "base64");
      expect(sig.byteLength).toBe(64);
      expect(verify(null, manifestBytes, devKey, sig)).toBe(true);
      expect(readFileSync(join(outdir, version, "SHA256SUMS"), "utf8")).toBe(`${sha256(gz)}  ${ASSET}\n`);
      // gzip makes the download about half the binary
      expect(gz.byteLength).toBeLessThan(binary.byteLength * 0.6);
      console.error(`${version}: binary ${(binary.byteLength / 1e6).toFixed(1)} MB, ${ASSET} ${(gz.byteLength / 1e6).toFixed(1)} MB`);
      const unpacked = join(tempDir("unpacked"), "berth");
      writeFileSync(unpacked, binary, { mode: 0o755 });
      const printed = Bun.spawnSync([unpacked, "--version"], { stdin: "ignore" });
      expect(printed.stdout.toString()).toBe(`${version}\n`);
      expect(readdirSync(join(outdir, version)).sort()).toEqual([ASSET, "SHA256SUMS", "manifest.json", "manifest.json.sig"].sort());
    }
    expect(buildWarnings).toContain(`warning: signing with the development key ${join(ROOT, "dist", "dev-signing-key.pem")}: this release is for testing only`);
    expect(readdirSync(outdir).sort()).toEqual([OLD, NEW, "install.sh", "latest.json", "latest.json.sig"].sort());
    console.error(`release builds (host target): ${OLD} ${buildSeconds[OLD]?.toFixed(1)} s, ${NEW} ${buildSeconds[NEW]?.toFixed(1)} s`);
  });
});

// A URL where a server was and no longer is.
const down = await serveDirectory(outdir);
const downUrl = down.url;
await down.stop();

const SHELLS: { name: string; cmd: string[] }[] = [
  { name: "dash", cmd: ["dash"] },
  { name: "bash", cmd: ["bash"] },
  { name: "busybox sh", cmd: ["busybox", "sh"] },
];

describe("the built install.sh", () => {
  for (const shell of SHELLS) {
    test.skipIf(!has(shell.cmd[0] as string))(
      `${shell.name}: a fresh install from the baked-in URL, then berth --version through the link`,
      async () => {
        const t = newHome();
        const r = await run(t, shell.cmd);
        if (r.code !== 0) throw new Error(`install.sh exited ${r.code}: ${r.stderr}`);
        expect(r.json).toMatchObject({ status: "installed", version: NEW, target: TARGET, commandLink: linkOf(t), pathUpdated: true });
        expect(r.stderr).toContain(`berth-install: installing berth ${NEW} (${TARGET}) from ${server.url}`);
        expect(readlinkSync(pkg(t, "current"))).toBe(`releases/${NEW}-${TARGET}`);
        const version = await t.exec([linkOf(t), "--version"]);
        expect(version.stdout).toBe(`${NEW}\n`);
        expect(readFileSync(join(t.env.HOME as string, ".profile"), "utf8")).toContain("# >>> berth >>>");
        console.error(`install.sh under ${shell.name} from loopback HTTP: ${r.seconds.toFixed(2)} s`);
      },
      TEST_TIMEOUT_MS,
    );
  }

  test(
    "upgrade: --release 1.0.0, then the latest; flags reach `berth install`",
    async () => {
      const t = newHome();
      const first = await run(t, ["dash"], ["--release", OLD, "--no-modify-path"]);
      expect(first.json).toMatchObject({ status: "installed", version: OLD, pathUpdated: false });
      expect(existsSync(join(t.env.HOME as string, ".profile"))).toBe(false);
      const second = await run(t, ["dash"], ["--no-modify-path"]);
      expect(second.json).toMatchObject({ status: "installed", version: NEW, pruned: [] });
      expect(readdirSync(pkg(t, "releases")).sort()).toEqual([`${OLD}-${TARGET}`, `${NEW}-${TARGET}`]);
      expect(readlinkSync(pkg(t, "current"))).toBe(`releases/${NEW}-${TARGET}`);
      expect((await t.exec([linkOf(t), "--version"])).stdout).toBe(`${NEW}\n`);
      const again = await run(t, ["dash"], ["--no-modify-path"]);
      expect(again.json.status).toBe("alreadyInstalled");
    },
    TEST_TIMEOUT_MS,
  );

  const failures: { name: string; base: () => Promise<string> | string; args?: string[]; message: RegExp; code: string }[] = [
    {
      name: "a corrupted binary on the server",
      base: async () =>
        (
          await serve(
            brokenRelease((dir) => {
              const path = join(dir, NEW, ASSET);
              const bytes = readFileSync(path);
              const middle = bytes.length >> 1;
              bytes[middle] = (bytes[middle] as number) ^ 0xff;
              writeFileSync(path, bytes);
            }),
          )
        ).url,
      message: new RegExp(`checksum mismatch for ${ASSET}: expected [0-9a-f]{64}, got [0-9a-f]{64}; nothing was installed`),
      code: "CHECKSUM_MISMATCH",
    },
    {
      name: "a wrong SHA256SUMS",
      base: async () => (await serve(brokenRelease((dir) => writeFileSync(join(dir, NEW, "SHA256SUMS"), `${"0".repeat(64)}  ${ASSET}\n`)))).url,
      message: new RegExp(`checksum mismatch for ${ASSET}: expected 0{64}`),
      code: "CHECKSUM_MISMATCH",
    },
    {
      name: "a version the server does not have (404)",
      base: () => server.url,
      args: ["--release", "9.9.9"],
      // the signed manifest is the first thing of a release install.sh asks for
      message: new RegExp(`could not download ${server.url}/9\\.9\\.9/manifest\\.json`),
      code: "DOWNLOAD_FAILED",
    },
    { name: "the server is down", base: () => downUrl, message: /could not download .*latest\.json/, code: "DOWNLOAD_FAILED" },
    {
      name: "a manifest signature by another key",
      base: async () => {
        const other = generateKeyPairSync("ed25519").privateKey;
        return (
          await serve(
            brokenRelease((dir) => {
              const path = join(dir, NEW, "manifest.json");
              writeFileSync(`${path}.sig`, `${sign(null, readFileSync(path), other).toString("base64")}\n`);
            }),
          )
        ).url;
      },
      message: /signature check failed: .*manifest\.json is not signed by a key this installer trusts/,
      code: "SIGNATURE_INVALID",
    },
  ];
  for (const f of failures) {
    for (const shell of SHELLS) {
      test.skipIf(!has(shell.cmd[0] as string))(
        `${shell.name}: ${f.name} → non-zero exit, a clear message, the layout exactly as before`,
        async () => {
          const t = newHome();
          const first = await run(t, shell.cmd, ["--release", OLD]);
          expect(first.json?.status).toBe("installed");
          const before = snapshot(t);
          const current = readlinkSync(pkg(t, "current"));
          const r = await run(t, shell.cmd, [...(f.args ?? []), "--bootstrap"], { BERTH_RELEASE_BASE_URL: await f.base() });
          expect(r.code).not.toBe(0);
          // stdout: exactly the error object a client over SSH reads
          expect(r.stdout.trimEnd().split("\n")).toHaveLength(1);
          expect(r.json).toEqual({ status: "error", error: { code: f.code, message: expect.stringMatching(f.message) } });
          expect(r.stderr.trimEnd().split("\n").at(-1)).toMatch(f.message);
          expect(snapshot(t)).toEqual(before);
          expect(readlinkSync(pkg(t, "current"))).toBe(current);
          expect((await t.exec([linkOf(t), "--version"])).stdout).toBe(`${OLD}\n`);
        },
        TEST_TIMEOUT_MS,
      );
    }
  }
});

describe("the built install.sh on a terminal that hangs up", () => {
  const EXIT_DEADLINE_MS = 60_000;
  test(
    "install.sh (leading the session) waits for berth through the hangup: layout complete, app-server and updater running",
    async () => {
      const t = newHome();
      const staging = pkg(t, "staging");
      // `sh install.sh` leads the terminal's session (what `ssh -tt host 'sh -c "$(curl …)"'` runs): the hangup
      // signals it, and its HUP trap must not run (removing the temp folder) before berth install is done.
      const child = Bun.spawn(["sh", SCRIPT, "--bootstrap", "--no-modify-path"], {
        env: { ...t.env, SHELL: "/bin/sh", PATH: SYSTEM_PATH, BERTH_RELEASE_BASE_URL: server.url },
        terminal: { data() {} },
      });
      const begun = await (async () => {
        const deadline = Date.now() + EXIT_DEADLINE_MS;
        while (Date.now() < deadline && child.exitCode === null) {
          if (existsSync(staging) && readdirSync(staging).length > 0) return true;
          await Bun.sleep(1);
        }
        return false;
      })();
      expect(begun).toBe(true);
      child.terminal?.close();
      await child.exited;
      // install.sh may be gone already: wait for berth itself.
      const deadline = Date.now() + EXIT_DEADLINE_MS;
      const installing = () => processesWithArg(t.home, "install").length > 0;
      while (installing() && Date.now() < deadline) await Bun.sleep(20);
      expect(installing()).toBe(false);
      expect(readlinkSync(pkg(t, "current"))).toBe(`releases/${NEW}-${TARGET}`);
      expect(readlinkSync(linkOf(t))).toBe(pkg(t, "current", "berth"));
      expect(readdirSync(staging)).toEqual([]);
      const status = await t.exec([linkOf(t), "status"]);
      expect(status.json.appServer.state).toBe("running");
      const appServer = JSON.parse(readFileSync(t.path("daemon", "app-server.pid"), "utf8"));
      expect((await t.exec([linkOf(t), "version"])).json.pid).toBe(appServer.pid);
      const record = JSON.parse(readFileSync(t.path("daemon", "updater.pid"), "utf8"));
      expect(argvOf(record.pid)).toContain("update-loop");
    },
    TEST_TIMEOUT_MS,
  );
});
