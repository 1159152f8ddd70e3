/**
 * `berth remote HOST bootstrap` against a real sshd on loopback, with a real
 * release (compiled for this machine by build.ts) served over loopback HTTP:
 * a host with no berth gets it installed and running; a second run installs
 * nothing; a host that cannot download gets the binary uploaded over ssh.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildRelease } from "../build.ts";
import { BUN, eventually, isAlive, killProcessesOf, MAIN, parseLastJsonLine, readJson, runProcess, TARGET } from "./helpers/berth.ts";
import { serveDirectory, type DirectoryServer } from "./helpers/release-server.ts";
import { freePort, sshdUnavailable, startSshd, type SshHost } from "./helpers/sshd.ts";

const VERSION = "3.2.1";
const NEWER = "3.3.0";
const RELEASE_BUILD_TIMEOUT_MS = 180_000;
/** A bootstrap moves a ~100 MB binary (download, or upload over ssh) and installs it: generous under a loaded CI. */
const BOOTSTRAP_TIMEOUT_MS = 300_000;
/** A test that runs up to two bootstraps. */
const TWO_BOOTSTRAPS_TEST_MS = 2 * BOOTSTRAP_TIMEOUT_MS + 30_000;
const reason = sshdUnavailable();
if (reason) console.warn(`SKIPPING remote bootstrap tests: ${reason}`);

let releaseDir = "";
let server: DirectoryServer | undefined;
const hosts: SshHost[] = [];
const clientDirs: string[] = [];

beforeAll(async () => {
  if (reason) return;
  releaseDir = mkdtempSync(join(tmpdir(), "berth-remote-release-"));
  await buildRelease({ version: VERSION, targets: [TARGET], outdir: releaseDir });
  server = await serveDirectory(releaseDir);
}, RELEASE_BUILD_TIMEOUT_MS);

afterAll(async () => {
  await server?.stop();
  if (releaseDir) rmSync(releaseDir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const host of hosts.splice(0)) {
    killProcessesOf(host.farBerthHome);
    await host.stop();
  }
  for (const dir of clientDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function newHost(options: Parameters<typeof startSshd>[0] = {}): Promise<SshHost> {
  const host = await startSshd(options);
  hosts.push(host);
  return host;
}

/** Runs `berth remote …` from source as the user's machine, with its own HOME (for the download cache). */
async function remote(host: SshHost, args: string[], env: Record<string, string> = {}) {
  const clientHome = mkdtempSync(join(tmpdir(), "berth-remote-client-"));
  clientDirs.push(clientHome);
  return runProcess(
    [BUN, MAIN, "remote", ...args],
    { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: clientHome, NO_COLOR: "1", BERTH_SSH: host.sshCommand, ...env },
    BOOTSTRAP_TIMEOUT_MS,
  );
}

const managedBinary = (host: SshHost) => join(host.farBerthHome, "packages", "standalone", "current", "berth");

describe.skipIf(Boolean(reason))("remote bootstrap over a real sshd", () => {
  test("a host with no berth: installed from the release by the host's curl, running; again: nothing reinstalled", async () => {
    // The title escape has no newline: it opens the first line of every remote command's output.
    const host = await newHost({ bashrc: `echo "welcome to the far side (noise from .bashrc)"; printf '\\033]0;far title\\007'` });
    const first = await remote(host, [host.alias, "bootstrap"], { BERTH_RELEASE_BASE_URL: server!.url });
    expect(first.stderr).not.toContain("error");
    expect(first.code).toBe(0);
    expect(first.stdout.trim().split("\n")).toHaveLength(1);
    expect(first.json).toMatchObject({ status: "bootstrapped", host: host.alias, target: TARGET, action: "installed", method: "download", previousVersion: null, version: VERSION });
    expect(first.json.remote).toMatchObject({ status: "bootstrapped", managedVersion: VERSION, appServerVersion: VERSION });
    expect(server!.requests.filter((path) => path.startsWith(`/${VERSION}/berth-${TARGET}`))).toHaveLength(1);
    expect(readlinkSync(join(host.farBerthHome, "packages", "standalone", "current"))).toBe(`releases/${VERSION}-${TARGET}`);
    const pid = first.json.remote.pid as number;
    expect(isAlive(pid)).toBe(true);
    // The host remembers where its updates come from.
    expect(readJson(join(host.farBerthHome, "daemon", "settings.json")).releaseBaseUrl).toBe(server!.url);

    const downloads = server!.requests.filter((path) => path.startsWith(`/${VERSION}/berth-${TARGET}`)).length;
    const second = await remote(host, [host.alias, "bootstrap"], { BERTH_RELEASE_BASE_URL: server!.url });
    expect(second.code).toBe(0);
    expect(second.json).toMatchObject({ status: "bootstrapped", action: "alreadyInstalled", previousVersion: VERSION, version: VERSION });
    expect(second.json.method).toBeUndefined();
    expect(server!.requests.filter((path) => path.startsWith(`/${VERSION}/berth-${TARGET}`)).length).toBe(downloads);
    // Same app-server: bootstrap with unchanged settings does not restart it.
    expect(second.json.remote.pid).toBe(pid);
  }, TWO_BOOTSTRAPS_TEST_MS);

  test("an older berth on the host is updated to the latest release, and its app-server restarted on it", async () => {
    const host = await newHost();
    const first = await remote(host, [host.alias, "bootstrap"], { BERTH_RELEASE_BASE_URL: server!.url });
    expect(first.json).toMatchObject({ action: "installed", version: VERSION });
    const newerDir = mkdtempSync(join(tmpdir(), "berth-remote-newer-"));
    clientDirs.push(newerDir);
    cpSync(releaseDir, newerDir, { recursive: true });
    await buildRelease({ version: NEWER, targets: [TARGET], outdir: newerDir });
    const newer = await serveDirectory(newerDir);
    try {
      const second = await remote(host, [host.alias, "bootstrap"], { BERTH_RELEASE_BASE_URL: newer.url });
      expect(second.code).toBe(0);
      expect(second.json).toMatchObject({ action: "updated", method: "download", previousVersion: VERSION, version: NEWER });
      expect(second.json.remote).toMatchObject({ managedVersion: NEWER, appServerVersion: NEWER });
      expect(second.json.remote.pid).not.toBe(first.json.remote.pid);
    } finally {
      await newer.stop();
    }
  }, TWO_BOOTSTRAPS_TEST_MS + RELEASE_BUILD_TIMEOUT_MS);

  test("a host that cannot download (its proxy refuses): the binary is uploaded over ssh and installed", async () => {
    const deadPort = freePort();
    const host = await newHost({ farEnv: { http_proxy: `http://127.0.0.1:${deadPort}`, https_proxy: `http://127.0.0.1:${deadPort}` } });
    const clientHome = mkdtempSync(join(tmpdir(), "berth-remote-client-"));
    clientDirs.push(clientHome);
    const assetRequests = () => server!.requests.filter((path) => path.startsWith(`/${VERSION}/berth-${TARGET}`)).length;
    const before = assetRequests();
    const result = await remote(host, [host.alias, "bootstrap", "--remote-control"], { BERTH_RELEASE_BASE_URL: server!.url, HOME: clientHome });
    expect(result.code).toBe(0);
    expect(result.json).toMatchObject({ status: "bootstrapped", action: "installed", method: "upload", version: VERSION });
    expect(result.json.remote.remoteControlEnabled).toBe(true);
    expect(result.json.downloadError).toContain("install.sh");
    expect(isAlive(result.json.remote.pid)).toBe(true);
    expect(existsSync(managedBinary(host))).toBe(true);
    // The far side holds no upload leftovers.
    expect(readdirSync(host.farTmp)).toEqual([]);
    // The client downloaded the asset once: a second such host is served from its cache.
    expect(assetRequests()).toBe(before + 1);
    const other = await newHost({ farEnv: { http_proxy: `http://127.0.0.1:${deadPort}`, https_proxy: `http://127.0.0.1:${deadPort}` } });
    const again = await remote(other, [other.alias, "bootstrap"], { BERTH_RELEASE_BASE_URL: server!.url, HOME: clientHome });
    expect(again.json).toMatchObject({ action: "installed", method: "upload", version: VERSION });
    expect(assetRequests()).toBe(before + 1);
  }, TWO_BOOTSTRAPS_TEST_MS);

  test("a file:// release on this machine is uploaded (the host cannot read it)", async () => {
    const host = await newHost();
    const result = await remote(host, [host.alias, "bootstrap"], { BERTH_RELEASE_BASE_URL: `file://${releaseDir}` });
    expect(result.code).toBe(0);
    expect(result.json).toMatchObject({ action: "installed", method: "upload", version: VERSION });
    expect(await eventually(() => isAlive(result.json.remote.pid))).toBe(true);
  }, TWO_BOOTSTRAPS_TEST_MS);

  test("an upload from a release whose manifest signature does not verify is refused; the host is untouched", async () => {
    const host = await newHost();
    const tampered = mkdtempSync(join(tmpdir(), "berth-remote-tampered-"));
    clientDirs.push(tampered);
    cpSync(releaseDir, tampered, { recursive: true });
    const manifest = join(tampered, VERSION, "manifest.json");
    writeFileSync(manifest, readFileSync(manifest, "utf8").replace(`"version"`, ` "version"`));
    const result = await remote(host, [host.alias, "bootstrap"], { BERTH_RELEASE_BASE_URL: `file://${tampered}` });
    expect(result.code).toBe(1);
    expect(result.json.error.code).toBe("SIGNATURE_INVALID");
    expect(existsSync(host.farBerthHome)).toBe(false);
  }, TWO_BOOTSTRAPS_TEST_MS);

  test("no way to install (neither the host nor this machine reaches the release): DOWNLOAD_FAILED saying both", async () => {
    const host = await newHost();
    const dead = `http://127.0.0.1:${freePort()}`;
    const result = await remote(host, [host.alias, "bootstrap"], { BERTH_RELEASE_BASE_URL: dead });
    expect(result.code).toBe(1);
    expect(result.json.error.code).toBe("DOWNLOAD_FAILED");
    expect(result.json.error.message).toContain("could not fetch");
    expect(result.json.error.message).toContain("cannot be read from this machine");
    expect(existsSync(host.farBerthHome)).toBe(false);
  }, TWO_BOOTSTRAPS_TEST_MS);

  test("a host without berth: `remote HOST ps` says so and names the bootstrap command", async () => {
    const host = await newHost({ bashrc: "echo noise" });
    const result = await remote(host, [host.alias, "ps"]);
    expect(result.code).toBe(1);
    expect(result.json.error.code).toBe("NOT_INSTALLED");
    expect(result.json.error.message).toContain(`berth remote ${host.alias} bootstrap`);
  }, TWO_BOOTSTRAPS_TEST_MS);

  test("ssh failures are SSH_FAILED with ssh's own last line: nothing listening, key refused", async () => {
    const host = await newHost();
    const closed = await remote(host, ["-oPort=1", "bootstrap"], { BERTH_RELEASE_BASE_URL: server!.url, BERTH_SSH: `ssh -F ${host.configPath} -p ${freePort()} -o HostName=127.0.0.1 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null` });
    expect(closed.code).toBe(2); // a host starting with "-" is a usage error, never passed to ssh as an option
    const unreachable = await remote(host, [host.alias, "bootstrap"], {
      BERTH_RELEASE_BASE_URL: server!.url,
      BERTH_SSH: `ssh -F ${host.configPath} -p ${freePort()}`,
    });
    expect(unreachable.code).toBe(1);
    expect(unreachable.json.error.code).toBe("SSH_FAILED");
    expect(unreachable.json.error.message).toContain("Connection refused");
    const refused = await remote(host, [host.alias, "bootstrap"], {
      BERTH_RELEASE_BASE_URL: server!.url,
      BERTH_SSH: `ssh -F ${host.configPath} -o PubkeyAuthentication=no`,
    });
    expect(refused.json.error.code).toBe("SSH_FAILED");
    expect(refused.json.error.message).toContain("Permission denied");
    expect(parseLastJsonLine(refused.stdout)).toEqual(refused.json);
  }, TWO_BOOTSTRAPS_TEST_MS);
});
