/**
 * The remote-control port survives restarts (a client's SSH forward points at
 * it), and remote control off loopback needs TLS. Real app-servers, real ports.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isLoopbackHost, listenOfUrl, planRemoteListen } from "../src/server/remote-listen.ts";
import { readJson, homesPerTest, type TestHome } from "./helpers/berth.ts";

const listeners: { stop(force?: boolean): void }[] = [];
afterEach(() => {
  for (const listener of listeners.splice(0)) listener.stop(true);
});
const homeOf = homesPerTest(afterEach);
const newHome = (settings?: object) => homeOf({ prefix: "berth-rcport-", ...(settings ? { settings } : {}) });

/** Starts the app-server if needed, enables remote control, and returns its URL. */
async function remoteUrl(home: TestHome): Promise<string> {
  expect((await home.run(["start"])).code).toBe(0);
  const r = await home.run(["enable-remote-control"]);
  if (r.code !== 0) throw new Error(`enable-remote-control: ${r.stdout} ${r.stderr}`);
  return r.json.remoteControl.url;
}

describe("the remote-control port", () => {
  test("is the same before and after restart, and after stop + start", async () => {
    const home = newHome();
    const first = await remoteUrl(home);
    expect(first).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/$/);
    // a client talked to it (its connection leaves TIME_WAIT behind on close)
    expect((await fetch(first.replace("ws:", "http:"))).status).toBe(401);

    const restarted = await home.run(["restart"]);
    expect(restarted.code).toBe(0);
    expect(await remoteUrl(home)).toBe(first);

    expect((await home.run(["stop"])).code).toBe(0);
    expect(await remoteUrl(home)).toBe(first);
    expect(readJson(home.path("daemon/remote-control.listen"))).toEqual({ listen: listenOfUrl(first) });
  });

  test("a saved port someone else took meanwhile: a new port, saved, and the server still starts", async () => {
    const home = newHome();
    const first = await remoteUrl(home);
    expect((await home.run(["stop"])).code).toBe(0);
    const port = Number(/:(\d+)\/$/.exec(first)?.[1]);
    listeners.push(Bun.serve({ hostname: "127.0.0.1", port, fetch: () => new Response("squatter") }));
    const second = await remoteUrl(home);
    expect(second).not.toBe(first);
    expect(readJson(home.path("daemon/remote-control.listen"))).toEqual({ listen: listenOfUrl(second) });
    expect(readFileSync(home.path("daemon/app-server.log"), "utf8")).toContain("could not listen on the saved");
  });

  test("an explicit port in settings is used as is and not saved", async () => {
    const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
    const port = probe.port;
    probe.stop(true);
    const home = newHome({ remoteControl: { listen: `127.0.0.1:${port}` } });
    expect(await remoteUrl(home)).toBe(`ws://127.0.0.1:${port}/`);
    expect(existsSync(home.path("daemon/remote-control.listen"))).toBe(false);
  });
});

describe("remote control off loopback", () => {
  test("is refused without TLS, before anything is persisted", async () => {
    const home = newHome({ remoteControl: { listen: "0.0.0.0:0" } });
    const r = await home.run(["enable-remote-control"]);
    expect(r.code).toBe(1);
    expect(r.json.error.code).toBe("STATE_CORRUPT");
    expect(r.json.error.message).toContain("remoteControl.tls");
    expect(readJson(home.path("daemon/settings.json")).remoteControlEnabled).toBeUndefined();
    const boot = await home.run(["bootstrap", "--remote-control", "--no-auto-update"]);
    expect(boot.json.error.code).toBe("STATE_CORRUPT");
  });

  test.skipIf(!Bun.which("openssl"))("is served over TLS when remoteControl.tls names a certificate and key", async () => {
    const home = newHome();
    const dir = home.env.HOME as string;
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    const gen = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert], { stdout: "ignore", stderr: "pipe" });
    expect(gen.exitCode).toBe(0);
    await Bun.write(home.path("daemon/settings.json"), JSON.stringify({ remoteControl: { listen: "0.0.0.0:0", tls: { cert, key } } }));
    const url = await remoteUrl(home);
    expect(url).toMatch(/^wss:\/\/0\.0\.0\.0:\d+\/$/);
    const port = /:(\d+)\/$/.exec(url)?.[1];
    const response = await fetch(`https://127.0.0.1:${port}/`, { tls: { rejectUnauthorized: false } });
    expect(response.status).toBe(401);
    // With the token, TLS ends at berth's front door and the request reaches the app-server: a plain GET is 426, and a
    // WebSocket speaks JSON-RPC through it.
    const token = readFileSync(home.path("daemon/remote-control.token"), "utf8").trim();
    const authorized = await fetch(`https://127.0.0.1:${port}/`, { headers: { Authorization: `Bearer ${token}` }, tls: { rejectUnauthorized: false } });
    expect(authorized.status).toBe(426);
    const ws = new WebSocket(`wss://127.0.0.1:${port}/`, { headers: { Authorization: `Bearer ${token}` }, tls: { rejectUnauthorized: false } } as never);
    try {
      const reply = await new Promise<any>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no initialize reply over wss")), 15_000);
        ws.onopen = () => ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { clientInfo: { name: "tls-test", version: "1" } } }));
        ws.onmessage = (event) => {
          clearTimeout(timer);
          resolve(JSON.parse(String(event.data)));
        };
        ws.onerror = () => reject(new Error("wss connection failed"));
      });
      expect(reply.result?.remoteControl).toEqual({ enabled: true, url });
    } finally {
      ws.close();
    }
  });
});

describe("remote listen decisions (pure)", () => {
  const loopback: { host: string; loop: boolean }[] = [
    { host: "127.0.0.1", loop: true },
    { host: "127.1.2.3", loop: true },
    { host: "::1", loop: true },
    { host: "localhost", loop: true },
    { host: "::ffff:127.0.0.1", loop: true },
    { host: "0.0.0.0", loop: false },
    { host: "::", loop: false },
    { host: "192.168.1.10", loop: false },
    { host: "127.example.com", loop: false },
  ];
  for (const { host, loop } of loopback) test(`isLoopbackHost(${host}) = ${loop}`, () => expect(isLoopbackHost(host)).toBe(loop));

  const settingsFile = "/h/daemon/settings.json";
  const tls = { cert: "/c.pem", key: "/k.pem" };
  const plans: { name: string; listen: string; tls?: unknown; saved?: string; plan: object | RegExp }[] = [
    { name: "first start binds port 0", listen: "127.0.0.1:0", plan: { listen: "127.0.0.1:0", reused: false } },
    { name: "a saved port is reused", listen: "127.0.0.1:0", saved: "127.0.0.1:40279", plan: { listen: "127.0.0.1:40279", reused: true } },
    { name: "a saved port of another host is not", listen: "[::1]:0", saved: "127.0.0.1:40279", plan: { listen: "[::1]:0", reused: false } },
    { name: "an explicit port wins over the saved one", listen: "127.0.0.1:8080", saved: "127.0.0.1:40279", plan: { listen: "127.0.0.1:8080", reused: false } },
    { name: "a damaged saved address is ignored", listen: "127.0.0.1:0", saved: "nonsense", plan: { listen: "127.0.0.1:0", reused: false } },
    { name: "non-loopback without TLS is refused", listen: "0.0.0.0:0", plan: /needs TLS/ },
    { name: "non-loopback with TLS is served", listen: "0.0.0.0:0", tls, plan: { listen: "0.0.0.0:0", tls, reused: false } },
    { name: "a half TLS setting is refused", listen: "127.0.0.1:0", tls: { cert: "/c.pem" }, plan: /remoteControl\.tls must be/ },
  ];
  for (const c of plans) {
    test(c.name, () => {
      const run = () => planRemoteListen({ listen: c.listen, tls: c.tls, saved: c.saved, settingsFile });
      if (c.plan instanceof RegExp) expect(run).toThrow(c.plan);
      else expect(run()).toEqual(c.plan as never);
    });
  }
});
