/** `berth serve`: the app-server in the foreground until SIGTERM. */
import { BerthError } from "../errors.ts";
import { logger } from "../output.ts";
import { openContext, settingsOf } from "../daemon/context.ts";
import { captureStdio, logLimitsOf, stdoutIsLog } from "../daemon/log.ts";
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
  // Launched as a daemon (stdout is its log): stamp and rotate every line from here on.
  if (stdoutIsLog(ctx.layout.appServerLog)) captureStdio(ctx.layout.appServerLog, () => logLimitsOf(ctx));
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
  await server.closed;
  logger.info(`berth app-server pid ${identity.pid} stopped`);
  return { status: "stopped", pid: identity.pid, instanceId: identity.instanceId };
}

