// Edge cases of `remote`'s "did you mean" (spec-audit): a subcommand where the HOST belongs with no host after
// it, and `run --name` with its value missing, must say what is wrong — not suggest `berth remote -- run`, call
// `ps` a host that needs a subcommand, or suggest "--name" to someone who typed "--name".
import { describe, expect, test } from "bun:test";
import { parseRemoteArgs } from "../src/client/args.ts";
import { BerthError } from "../src/errors.ts";
import { didYouMean } from "../src/suggest.ts";

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
