/** `berth serve`: the app-server in the foreground until SIGTERM. */
import { BerthError } from "../errors.ts";
import { logger } from "../output.ts";
import { openContext, settingsOf } from "../daemon/context.ts";
import { notifyReady } from "../daemon/ready.ts";
import { startServer } from "./serve.ts";
import { ensureToken } from "./token.ts";

const SHUTDOWN_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const;

export function socketPathFromListen(listen: string | undefined, fallback: string): string {
  if (listen === undefined || listen === "") return fallback;
  if (!listen.startsWith("unix://") || listen.length <= "unix://".length) {
    throw new BerthError("USAGE", `--listen takes unix://PATH, got ${JSON.stringify(listen)}.`);
  }
  return listen.slice("unix://".length);
}

export async function serve(options: { listen?: string; remoteControl?: boolean }) {
  const ctx = openContext();
  const socketPath = socketPathFromListen(options.listen, ctx.socket.path);
  const settings = settingsOf(ctx);
  const remoteControl = options.remoteControl
    ? { listen: settings.remoteControl.listen, token: ensureToken(ctx.layout.tokenFile) }
    : undefined;
  const server = await startServer({ socketPath, berthHome: ctx.layout.home, remoteControl, settings });
  const identity = server.identity();
  logger.info(
    `berth app-server ${identity.serverInfo.version} pid ${identity.pid} listening on ${socketPath}` +
      (identity.remoteControl.url ? ` and ${identity.remoteControl.url} (remote control)` : ""),
  );
  for (const signal of SHUTDOWN_SIGNALS) process.on(signal, () => server.shutdown());
  // Listening and able to shut down cleanly: tell the starter (see daemon/ready.ts).
  notifyReady();
  await server.closed;
  logger.info(`berth app-server pid ${identity.pid} stopped`);
  return { status: "stopped", pid: identity.pid, instanceId: identity.instanceId };
}
