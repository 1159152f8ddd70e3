/**
 * The release base URL compiled into the binary (`build.ts --base-url`): a
 * binary downloaded by hand knows where its updates come from.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compile } from "../build.ts";
import { readJson, homesPerTest } from "./helpers/berth.ts";

const BASE = "http://127.0.0.1:9/berth-releases";
const binDir = mkdtempSync(join(tmpdir(), "berth-baseurl-bin-"));
const binary = join(binDir, "berth");
await compile({ version: "2.0.0", outfile: binary, baseUrl: `${BASE}/` });

const homeOf = homesPerTest(afterEach);
const newHome = () => homeOf({ install: false, prefix: "berth-baseurl-" });
afterAll(() => rmSync(binDir, { recursive: true, force: true }));

test("NOT_INSTALLED names the compiled-in base URL", async () => {
  const home = newHome();
  const r = await home.exec([binary, "start"]);
  expect(r.code).toBe(1);
  expect(r.json.error.code).toBe("NOT_INSTALLED");
  expect(r.json.error.message).toContain(`curl -fsSL ${BASE}/install.sh | sh`);
  expect(r.json.error.message).not.toContain("<release-base>");
});

test("`./berth install` by hand saves the compiled-in base URL as releaseBaseUrl", async () => {
  const home = newHome();
  const r = await home.exec([binary, "install", "--no-modify-path"]);
  expect(r.code).toBe(0);
  expect(readJson(home.path("daemon/settings.json")).releaseBaseUrl).toBe(BASE);
  const status = await home.exec([join(home.env.BERTH_INSTALL_DIR as string, "berth"), "status"]);
  expect(status.json.settings.releaseBaseUrl).toBe(BASE);
});

test("BERTH_RELEASE_BASE_URL (what install.sh exports) wins over the compiled-in URL", async () => {
  const home = newHome();
  const r = await home.exec([binary, "install", "--no-modify-path"], { env: { BERTH_RELEASE_BASE_URL: "file:///srv/berth/" } });
  expect(r.code).toBe(0);
  expect(readJson(home.path("daemon/settings.json")).releaseBaseUrl).toBe("file:///srv/berth");
});
