/**
 * The client's connection against what it is handed: notification listeners
 * that subscribe during an emit (src/client/listeners.ts), and lines from the
 * host that are JSON but no message (a small fake host, BERTH_SSH).
 */
import { expect, test } from "bun:test";
import { connect, RpcError } from "../src/client/connection.ts";
import { Listeners } from "../src/client/listeners.ts";

test("a listener that subscribes anew on each notification (a hand-made once) is called once per notification, not in a loop", () => {
  const listeners = new Listeners("host");
  let calls = 0;
  const once = () => {
    const off = listeners.on("tick", () => {
      calls += 1;
      off();
      if (calls < 1_000) once(); // before: this one ran within the same emit, 1000 times
    });
  };
  once();
  listeners.emit("tick", {});
  expect(calls).toBe(1);
  listeners.emit("tick", {});
  expect(calls).toBe(2);
});

test("subscribed during an emit: gets the next one; unsubscribed during an emit: the rest of that emit still reaches those subscribed when it came", () => {
  const listeners = new Listeners("host");
  const seen: string[] = [];
  let offB: () => void = () => {};
  listeners.on("m", () => {
    seen.push("a");
    offB();
    listeners.on("*", ({ method }) => seen.push(`late-${method}`));
  });
  offB = listeners.on("m", () => seen.push("b"));
  listeners.emit("m", {});
  expect(seen).toEqual(["a", "b"]);
  seen.length = 0;
  listeners.emit("x", {});
  expect(seen).toEqual(["late-x"]);
});

test("lines from the host that are JSON but not messages are skipped: the connection goes on", async () => {
  const fixture = `${import.meta.dir}/fixtures/junk-host.ts`;
  const conn = await connect("junk", { env: { ...process.env, BERTH_SSH: `${process.execPath} ${fixture}` }, timeoutMs: 20_000 });
  try {
    // Before, the first `null` threw in the reading loop, which killed the ssh: this call got ConnectionClosed.
    expect(await conn.call("ping", {}, 20_000)).toEqual({ echo: "ping" });
    // An error that is not an object is still an error of the server's, with the JSON-RPC code for an internal one.
    const failed = await conn.call("bad-error", {}, 20_000).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(RpcError);
    expect((failed as RpcError).code).toBe(-32603);
    expect(conn.isClosed).toBe(false);
  } finally {
    await conn.close();
  }
});
