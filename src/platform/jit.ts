/**
 * Compiled berth starts with JavaScriptCore's tier-up thresholds scaled by build.ts's JIT_POLICY: a command runs
 * its start-up code once, and compiling that code does not pay back (fewer page faults, ~2–8 % off the lifecycle
 * commands: bench/README.md). A process that goes on to work for long — the app-server once ready, `connect`'s
 * bridge, a `remote` session, `logs --follow` — calls this once to get the normal JIT back for its hot loops.
 */
export function workingForLong(): void {
  Bun.unsafe.setJITPolicy(1);
}
