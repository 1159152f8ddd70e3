#!/usr/bin/env bun
import { reopenClosedStdio } from "./stdio.ts";

// A closed descriptor 0–2 would be reused by the next file berth opens.
reopenClosedStdio();
// Help text goes to pipes read by programs as often as to terminals: colour only for a terminal.
if (!process.stdout.isTTY) process.env.NO_COLOR ??= "1";
// Everything berth creates, and everything it launches, is private to the user.
process.umask(0o077);
const { runCli } = await import("./cli.ts");
process.exit(await runCli(process.argv.slice(2)));
export {};
