// SPEC "Commands": "Mistyped commands and flags get a 'did you mean' on
// stderr" — for the subcommands and flags of `berth remote HOST …` too, and a
// host typed after the subcommand is named as such; a missing HOST or --name value is named, not "corrected".
import { describe, expect, test } from "bun:test";
import { parseRemoteArgs } from "../src/client/args.ts";
import { BerthError } from "../src/errors.ts";
import { didYouMean } from "../src/suggest.ts";
import { makeHome } from "./helpers/berth.ts";

function usageMessage(argv: string[]): string {
  try {
    parseRemoteArgs(argv);
  } catch (error) {
    expect(error).toBeInstanceOf(BerthError);
    expect((error as BerthError).code).toBe("USAGE");
    return (error as BerthError).message.split("\n")[0] as string;
  }
  throw new Error(`${argv.join(" ")} was accepted`);
}

describe("remote: did you mean (pure)", () => {
  const cases: Array<{ argv: string[]; says: string }> = [
    { argv: ["h", "atach", "3"], says: 'Did you mean "attach"?' },
    { argv: ["h", "shel"], says: 'Did you mean "shell"?' },
    { argv: ["h", "forwrd", "8080:localhost:80"], says: 'Did you mean "forward"?' },
    { argv: ["h", "bootstrap", "--remote-contrl"], says: 'Did you mean "--remote-control"?' },
    { argv: ["h", "run", "--nme", "x", "--", "ls"], says: 'Did you mean "--name"?' },
    { argv: ["h", "run", "--nam=x", "--", "ls"], says: 'Did you mean "--name"?' },
    { argv: ["shell", "myhost"], says: "the HOST comes first, as in `berth remote myhost shell`" },
    { argv: ["kill", "myhost", "p1"], says: "the HOST comes first, as in `berth remote myhost kill`" },
  ];
  for (const { argv, says } of cases) test(`${argv.join(" ")} → ${says}`, () => expect(usageMessage(argv)).toContain(says));

  test("nothing close: no suggestion", () => {
    expect(usageMessage(["h", "xyzzy"])).not.toContain("Did you mean");
    expect(usageMessage(["h", "bootstrap", "--force"])).not.toContain("Did you mean");
  });

  test("a host that happens to be named like a subcommand still works when the subcommand is valid", () => {
    expect(parseRemoteArgs(["shell", "ps"])).toEqual({ host: "shell", command: "ps" });
  });
});

describe("remote: usage messages for a missing HOST or a missing --name value (pure)", () => {
  const cases: Array<{ argv: string[]; says: string; never: string }> = [
    { argv: ["ps"], says: "needs a HOST first, as in `berth remote HOST ps`", never: "needs a subcommand" },
    { argv: ["shell"], says: "needs a HOST first, as in `berth remote HOST shell`", never: "needs a subcommand" },
    { argv: ["run", "--", "ls"], says: "needs a HOST first, as in `berth remote HOST run`", never: "berth remote -- run" },
    { argv: ["run", "--name", "x", "--", "ls"], says: "needs a HOST first", never: "berth remote --name run" },
    { argv: ["h", "run", "--name"], says: "--name needs a value", never: "Did you mean" },
    { argv: ["h", "run", "--name", "--", "ls"], says: "--name needs a value", never: "Did you mean" },
  ];
  for (const { argv, says, never } of cases) {
    test(`${argv.join(" ")} → ${says}`, () => {
      const message = usageMessage(argv);
      expect(message).toContain(says);
      expect(message).not.toContain(never);
    });
  }

  test("still accepted: a host named like a subcommand, and --name with a value", () => {
    expect(parseRemoteArgs(["shell", "ps"])).toEqual({ host: "shell", command: "ps" });
    expect(parseRemoteArgs(["h", "run", "--name", "x", "--", "ls"])).toEqual({ host: "h", command: "run", name: "x", argv: ["ls"] });
    expect(parseRemoteArgs(["h", "run", "--name=--", "--", "ls"])).toEqual({ host: "h", command: "run", name: "--", argv: ["ls"] });
  });

  test("didYouMean never suggests what was typed", () => {
    expect(didYouMean("--name", ["--name"])).toBe("");
    expect(didYouMean("--nme", ["--name"])).toBe(' Did you mean "--name"?');
  });
});

test("berth remote h atach 3: USAGE, exit 2, the suggestion on stderr, one JSON line, no ssh run", async () => {
  const home = makeHome({ install: false, prefix: "berth-spec-remote-" });
  try {
    // An ssh that would leave a mark if it ran.
    const result = await home.run(["remote", "h", "atach", "3"], { env: { BERTH_SSH: `touch ${home.path("ssh-ran")}` } });
    expect(result.code).toBe(2);
    expect(result.stdout.trim().split("\n")).toHaveLength(1);
    expect(result.json.error.code).toBe("USAGE");
    expect(result.stderr).toContain('Did you mean "attach"?');
    expect(await Bun.file(home.path("ssh-ran")).exists()).toBe(false);
  } finally {
    await home.cleanup();
  }
});
