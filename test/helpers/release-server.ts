// A tiny static file server on loopback for tests: serves files under `root`
// (404 for anything else, no escaping the root) and records request paths.
import { mkdtempSync, rmSync } from "node:fs";
import { stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve, sep } from "node:path";

export interface DirectoryServer {
  /** e.g. http://127.0.0.1:43121 (no trailing slash) */
  url: string;
  /** pathnames requested so far, in order */
  requests: string[];
  stop(): Promise<void>;
}

export async function serveDirectory(root: string): Promise<DirectoryServer> {
  const base = resolve(root);
  const requests: string[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const { pathname } = new URL(req.url);
      requests.push(pathname);
      let file: string;
      try {
        file = resolve(base, "." + decodeURIComponent(pathname));
      } catch {
        return new Response("bad request\n", { status: 400 });
      }
      if (!file.startsWith(base + sep)) return new Response("not found\n", { status: 404 });
      const info = await stat(file).catch(() => null);
      if (!info?.isFile()) return new Response("not found\n", { status: 404 });
      return new Response(Bun.file(file));
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    requests,
    stop: async () => {
      await server.stop(true);
    },
  };
}

/**
 * Temporary folders and directory servers for a test file: `tempDir(label)`
 * makes `<prefix><label>-XXXXXX`, `serve(root)` serves a folder; after the
 * file's last test (`afterAll` is bun:test's) every server is stopped and every folder removed.
 */
export function foldersAndServers(
  afterAll: (fn: () => Promise<void>) => void,
  prefix: string,
): { tempDir(label: string): string; serve(root: string): Promise<DirectoryServer> } {
  const dirs: string[] = [];
  const servers: DirectoryServer[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  return {
    tempDir(label) {
      const dir = mkdtempSync(join(tmpdir(), `${prefix}${label}-`));
      dirs.push(dir);
      return dir;
    },
    async serve(root) {
      const server = await serveDirectory(root);
      servers.push(server);
      return server;
    },
  };
}
