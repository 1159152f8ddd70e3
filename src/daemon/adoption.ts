/**
 * Proof that the process answering on our socket is our app-server, before
 * berth records (adopts) it and so may later signal it. What a peer says about
 * itself over the socket is a claim; the kernel's peer credentials are a fact.
 */
import { BerthError } from "../errors.ts";
import { unixSocketPeer } from "../platform/ffi.ts";
import { processArgv, processEnvValue } from "../platform/process.ts";
import type { PidBackend } from "./backend.ts";
import { sameHome, type Context } from "./context.ts";
import type { PidRecord } from "./pidfile.ts";

export type AdoptionFacts = {
  claimedPid: number;
  ourUid: number;
  peer: { pid: number; uid: number } | undefined;
  /** undefined where the platform has no /proc to read it from. */
  argv: string[] | undefined;
  berthHome: string | undefined;
};

/**
 * Pure: the reason the peer may not be adopted, or undefined when it is
 * proven to be a berth `serve` of this BERTH_HOME listening on our socket.
 */
export function adoptionRefusal(ctx: Pick<Context, "layout" | "socket">, facts: AdoptionFacts, platform = process.platform): string | undefined {
  const { claimedPid, peer } = facts;
  if (!Number.isInteger(claimedPid) || claimedPid <= 1) return `it claims pid ${claimedPid}, which berth never adopts`;
  if (!peer) return `the kernel reports no peer on ${ctx.socket.path}`;
  if (peer.pid !== claimedPid) return `it claims pid ${claimedPid}, but the kernel says pid ${peer.pid} listens on ${ctx.socket.path}`;
  if (peer.uid !== facts.ourUid) return `pid ${peer.pid} runs as uid ${peer.uid}, not as you (uid ${facts.ourUid})`;
  if (platform !== "linux") return undefined;
  const argv = facts.argv ?? [];
  const listen = argv.indexOf("--listen");
  const listenArg = listen >= 0 ? (argv[listen + 1] ?? "") : "";
  if (!argv.includes("serve") || !listenArg.startsWith("unix://") || !sameHome(listenArg.slice("unix://".length), ctx.socket.path)) {
    return `pid ${peer.pid} is not a berth \`serve --listen unix://${ctx.socket.path}\` (its command line is ${JSON.stringify(argv.join(" ").slice(0, 200))})`;
  }
  if (facts.berthHome === undefined || !sameHome(facts.berthHome, ctx.layout.home)) return `pid ${peer.pid} runs with BERTH_HOME=${facts.berthHome ?? "(unset)"}, not ${ctx.layout.home}`;
  return undefined;
}

/** Gathers the facts (one connection for the peer credentials, /proc for the rest) and judges them. */
export function refuseAdoption(ctx: Context, claimedPid: number): string | undefined {
  let peer: AdoptionFacts["peer"];
  try {
    peer = unixSocketPeer(ctx.socket.path);
  } catch (error) {
    return `cannot read the peer credentials of ${ctx.socket.path}: ${(error as Error).message}`;
  }
  const pid = peer?.pid ?? claimedPid;
  return adoptionRefusal(ctx, {
    claimedPid,
    ourUid: process.getuid?.() ?? 0,
    peer,
    argv: processArgv(pid),
    berthHome: processEnvValue(pid, "BERTH_HOME"),
  });
}

/** A server that says it is ours but could not be proven to be (see adoption.ts): never adopted, never signalled. */
function unprovenServerError(ctx: Context, pid: number, reason: string): BerthError {
  return new BerthError(
    "NOT_MANAGED",
    `something on ${ctx.socket.path} answers as the berth app-server of ${ctx.layout.home} (pid ${pid}), but ${reason}; berth did not adopt or signal it. Stop it yourself, or remove the socket if it is not yours.`,
  );
}

/** Records the server answering on our socket, only once it is proven ours; NOT_MANAGED otherwise. */
export async function adoptProven(ctx: Context, backend: PidBackend, pid: number): Promise<PidRecord | undefined> {
  const refusal = refuseAdoption(ctx, pid);
  if (refusal) throw unprovenServerError(ctx, pid, refusal);
  return backend.adopt(pid);
}
