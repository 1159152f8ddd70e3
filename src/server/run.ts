/** `berth serve`: the app-server in the foreground until SIGTERM. */
import { BerthError } from "../errors.ts";
import { logger } from "../output.ts";
import { openContext, settingsOf, type Context } from "../daemon/context.ts";
import { notifyReady } from "../daemon/ready.ts";
import { captureStdio, logLimitsOf, stdoutIsLog } from "../daemon/log.ts";
import type { Settings } from "../daemon/settings.ts";
import { FILE_MODE, writeFileAtomic } from "../platform/fs.ts";
import { workingForLong } from "../platform/jit.ts";
import type { RemoteListenPlan } from "./remote-listen.ts";
import { startServer, type ServeOptions } from "./serve.ts";

const SHUTDOWN_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const;

function parseListenPort(listen: string): number {
  return Number(/:(\d+)$/.exec(listen)?.[1] ?? NaN);
}

export function socketPathFromListen(listen: string | undefined, fallback: string): string {
  if (listen === undefined || listen === "") return fallback;
  if (!listen.startsWith("unix://") || listen.length <= "unix://".length) {
    throw new BerthError("USAGE", `--listen takes unix://PATH, got ${JSON.stringify(listen)}.`);
  }
  return listen.slice("unix://".length);
}

/** Remote control's listen plan and token; their modules load only when remote control is on. */
async function remotePlan(ctx: Context, settings: Settings) {
  const remote = await import("./remote-listen.ts");
  const savedPath = remote.savedListenPath(ctx.layout.daemonDir);
  const plan: RemoteListenPlan = remote.planRemoteListen({
    listen: settings.remoteControl.listen,
    tls: settings.remoteControl.tls,
    saved: remote.readSavedListen(savedPath),
    settingsFile: ctx.layout.settingsFile,
  });
  const token = (await import("./token.ts")).ensureToken(ctx.layout.tokenFile);
  /** Saves the port bound for `…:0`, so later servers ask for it again. */
  const keepBound = (url: string | undefined) => {
    const bound = url ? remote.listenOfUrl(url) : undefined;
    if (bound !== undefined && bound !== plan.listen && parseListenPort(settings.remoteControl.listen) === 0) remote.saveListen(savedPath, bound);
  };
  return { plan, token, keepBound };
}

/** Pure: whether a shutdown report holds anything but zeros (`{ processesEnded: 0 }` says nothing stop needs). */
export function reportSaysSomething(report: Record<string, unknown>): boolean {
  return Object.values(report).some((value) => value !== 0);
}

export async function serve(options: { listen?: string; remoteControl?: boolean }) {
  const ctx = openContext();
  const socketPath = socketPathFromListen(options.listen, ctx.socket.path);
  const settings = settingsOf(ctx);
  // Launched as a daemon (stdout is its log): stamp and rotate every line from here on, with the limits just read.
  if (stdoutIsLog(ctx.layout.appServerLog)) captureStdio(ctx.layout.appServerLog, () => logLimitsOf(ctx), settings.logs);
  const remote = options.remoteControl ? await remotePlan(ctx, settings) : undefined;
  const plan = remote?.plan;
  const serveWith = (listen: string) =>
    startServer({
      socketPath,
      berthHome: ctx.layout.home,
      settings,
      adoptOrphans: true,
      ...(remote ? { remoteControl: { listen, token: remote.token, ...(remote.plan.tls ? { tls: remote.plan.tls } : {}) } } : {}),
    } satisfies ServeOptions);
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await serveWith(plan?.listen ?? "");
  } catch (error) {
    // The saved port was taken by someone else meanwhile: bind a new one (and save it) rather than not starting.
    if (!plan?.reused || !(error instanceof BerthError) || error.code !== "START_FAILED") throw error;
    logger.warn(`remote control could not listen on the saved ${plan.listen} again (${error.message}); binding ${settings.remoteControl.listen} instead.`);
    server = await serveWith(settings.remoteControl.listen);
  }
  const identity = server.identity();
  remote?.keepBound(identity.remoteControl.url);
  for (const signal of SHUTDOWN_SIGNALS) process.on(signal, () => server.shutdown());
  // Listening and able to shut down cleanly: tell the starter (see daemon/ready.ts), then log. Both in this
  // one synchronous run, so the line is in the log before any `initialize` is answered (the starter's
  // confirmation), and it is written while the starter connects instead of before it is told (the logger's
  // first use, the stamp and the append: ~0.35 ms). test/ready.test.ts holds both.
  notifyReady();
  workingForLong();
  logger.info(
    `berth app-server ${identity.serverInfo.version} pid ${identity.pid} listening on ${socketPath}` +
      (identity.remoteControl.url ? ` and ${identity.remoteControl.url} (remote control)` : ""),
  );
  await server.closed;
  const report = await server.shutdownReport;
  // `stop` reads this after the process is gone to report processesEnded (see daemon/stop-server.ts). Only
  // that `stop`, in this boot, reads it: no fsync (it cost stop ~0.9 ms), a power cut loses nothing anyone needs.
  // A report of nothing is not written: `stop` removed the last one before its signal and reads none as 0, and
  // creating a file in a folder gone cold cost the exit ~0.7 ms here (the whole of the rest of the report's work).
  if (reportSaysSomething(report)) {
    try {
      writeFileAtomic(ctx.layout.appServerShutdown, `${JSON.stringify({ pid: identity.pid, instanceId: identity.instanceId, at: new Date().toISOString(), ...report })}\n`, FILE_MODE, { durable: false });
    } catch (error) {
      logger.warn(`could not record the shutdown report in ${ctx.layout.appServerShutdown}:`, error);
    }
  }
  logger.info(`berth app-server pid ${identity.pid} stopped; ${JSON.stringify(report)}`);
  return { status: "stopped", pid: identity.pid, instanceId: identity.instanceId };
}
