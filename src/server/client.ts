/** Talking to a running app-server: is anyone there, and who is it. */
import { existsSync } from "node:fs";
import { CLI_VERSION } from "../version.ts";
import type { InitializeResult } from "./protocol.ts";

export type ProbeResult =
  | { kind: "berth"; info: InitializeResult }
  | { kind: "foreign"; detail: string }
  | { kind: "absent"; detail: string };

/**
 * Pure: whether a failed connect reached a listener. One that accepts and hangs up before this process's loop
 * looks (a busy or loaded process) is reported by Bun as a connect error ECONNRESET, though connect(2) succeeded;
 * nobody listening is ECONNREFUSED, no socket ENOENT.
 */
export function acceptedThenHungUp(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "ECONNRESET";
}

/** True when something accepts a connection on the Unix socket. */
export async function socketAcceptsConnections(socketPath: string, timeoutMs: number): Promise<boolean> {
  if (!existsSync(socketPath)) return false;
  return new Promise<boolean>((resolve) => {
    let settled = false;
    const finish = (value: boolean, socket?: { end(): void }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket?.end();
      resolve(value);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    Bun.connect({
      unix: socketPath,
      socket: {
        open: (socket) => finish(true, socket),
        data() {},
        error: () => finish(false),
        connectError: (_socket, error) => finish(acceptedThenHungUp(error)),
      },
    }).catch((error: unknown) => finish(acceptedThenHungUp(error)));
  });
}

/** Pure: does an initialize result describe a berth app-server? */
export function isBerthInitializeResult(value: unknown): value is InitializeResult {
  const v = value as Partial<InitializeResult> | null;
  return (
    typeof v === "object" &&
    v !== null &&
    v.serverInfo?.name === "berth" &&
    typeof v.serverInfo.version === "string" &&
    Number.isInteger(v.pid) &&
    typeof v.instanceId === "string" &&
    typeof v.berthHome === "string"
  );
}

/**
 * Opens a WebSocket on the control socket, sends `initialize`, and reports who
 * answered within the deadline.
 */
export async function probeInitialize(socketPath: string, timeoutMs: number): Promise<ProbeResult> {
  if (!existsSync(socketPath)) return { kind: "absent", detail: `no socket at ${socketPath}` };
  const outcome = await new Promise<ProbeResult | "failed">((resolve) => {
    let settled = false;
    let ws: WebSocket | undefined;
    const finish = (result: ProbeResult | "failed") => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        ws?.close();
      } catch {
        // closing a socket that never opened
      }
      resolve(result);
    };
    const timer = setTimeout(() => finish("failed"), timeoutMs);
    try {
      ws = new WebSocket(`ws+unix://${socketPath}`);
    } catch {
      finish("failed");
      return;
    }
    ws.onopen = () => {
      ws?.send(
        JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { clientInfo: { name: "berth-cli", version: CLI_VERSION } } }),
      );
    };
    ws.onmessage = (event) => {
      let reply: { id?: unknown; result?: unknown } | undefined;
      try {
        reply = JSON.parse(String(event.data));
      } catch {
        finish({ kind: "foreign", detail: `something on ${socketPath} answered with non-JSON` });
        return;
      }
      if (reply?.id !== 1) return;
      if (isBerthInitializeResult(reply.result)) {
        ws?.send(JSON.stringify({ jsonrpc: "2.0", method: "initialized" }));
        finish({ kind: "berth", info: reply.result });
      } else {
        finish({ kind: "foreign", detail: `something on ${socketPath} answered initialize, but not as a berth app-server` });
      }
    };
    ws.onerror = () => finish("failed");
    ws.onclose = () => finish("failed");
  });
  if (outcome !== "failed") return outcome;
  // The handshake failed: is the socket dead, or is something else listening?
  if (await socketAcceptsConnections(socketPath, Math.min(timeoutMs, 500))) {
    return { kind: "foreign", detail: `something listens on ${socketPath} but does not speak the berth protocol` };
  }
  return { kind: "absent", detail: `nothing answers on ${socketPath}` };
}

/**
 * How many session processes the app-server on this socket runs (process/list),
 * or undefined when no berth app-server answers within the deadline.
 */
export async function countRunningProcesses(socketPath: string, timeoutMs: number): Promise<number | undefined> {
  if (!existsSync(socketPath)) return undefined;
  return new Promise<number | undefined>((resolve) => {
    let ws: WebSocket | undefined;
    const finish = (value: number | undefined) => {
      clearTimeout(timer);
      try {
        ws?.close();
      } catch {
        // never opened
      }
      resolve(value);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    try {
      ws = new WebSocket(`ws+unix://${socketPath}`);
    } catch {
      finish(undefined);
      return;
    }
    ws.onopen = () => {
      ws?.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { clientInfo: { name: "berth-cli", version: CLI_VERSION } } }));
      ws?.send(JSON.stringify({ jsonrpc: "2.0", id: 2, method: "process/list" }));
    };
    ws.onmessage = (event) => {
      try {
        const reply = JSON.parse(String(event.data)) as { id?: unknown; result?: { processes?: Array<{ state?: unknown }> } };
        if (reply.id !== 2) return;
        const processes = reply.result?.processes;
        finish(Array.isArray(processes) ? processes.filter((p) => p.state === "running").length : undefined);
      } catch {
        finish(undefined);
      }
    };
    ws.onerror = ws.onclose = () => finish(undefined);
  });
}
