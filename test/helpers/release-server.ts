// A tiny static file server on loopback for tests: serves files under `root`
// (404 for anything else, no escaping the root) and records request paths.
import { stat } from "node:fs/promises";
import { resolve, sep } from "node:path";

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
