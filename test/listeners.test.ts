/** The notification listeners of a connection (src/client/listeners.ts), as a table of what each emit reaches. */
import { expect, test } from "bun:test";
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
