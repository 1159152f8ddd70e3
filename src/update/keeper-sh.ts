/**
 * The resident part of the keeper on Linux: a POSIX-sh loop (dash, busybox
 * ash) that the Bun `update-loop` replaces itself with (execve: same pid,
 * same start time, so updater.pid's identity still holds). Idle it forks
 * only `sleep`, and reads with builtins: the app-server's pidfile and, for
 * the record it watches, /proc/<pid>/stat (state and start time, field 22).
 * When the record changes, the watched server is gone or changed, or the
 * deadline of the last step has come, it runs one `keeper-step` of the
 * current managed binary (src/update/loop.ts), which decides and acts (keeper
 * and updater) and writes back what to watch and when to be called again
 * (`daemon/keeper-next`). A step run by another version than the loop's own
 * re-executes `update-loop` from the current binary, so the loop always runs
 * the newest working release; a current binary that cannot run a step is
 * replaced for that step by the loop's own (which then fails restarts like
 * crashes, as the spec wants).
 *
 * SIGTERM/INT/HUP end the loop at once: the sleep is killed, a running step is
 * told too and waited for (a step stops at once except while it flips
 * `current` back and restarts, src/update/termination.ts). Both are children
 * of this shell, checked by parent pid before the signal.
 */
import { join } from "node:path";
import type { PidRecord } from "../daemon/pidfile.ts";

/** argv[0] of the loop, so /proc/<pid>/cmdline still names it (daemon/orphans.ts, tests). */
export const LOOP_NAME = "update-loop";
/** The loop's tick: a crash is noticed within this (spec: 1 s). Integer `sleep 1` where `sleep` takes no fraction. */
export const TICK_SECONDS = "0.5";
/** When neither binary could run a step, try again this much later (centiseconds). */
const STEP_FAILED_RETRY_CS = 1_000;

export const SHELL = "/bin/sh";

/** The verdict file a step writes (temp+rename) and the loop reads with `read`. */
export function verdictPath(daemonDir: string): string {
  return join(daemonDir, "keeper-next");
}

// The script: $0 = update-loop, $1 = the binary that exec'd this loop, $2 = its version; BERTH_HOME in the environment.
// shellcheck-clean as `sh` (test/keeper-sh.test.ts runs shellcheck on it).
export const KEEPER_SCRIPT = `set -u
self=$1
version=$2
bin=$BERTH_HOME/packages/standalone/current/berth
pidfile=$BERTH_HOME/daemon/app-server.pid
verdict=$BERTH_HOME/daemon/keeper-next
nap=${TICK_SECONDS}
sleep 0.01 2>/dev/null || nap=1
napper=
stepper=
seen=-
wpid=0
wstart=0
wake=0
n=0
now=0
up=0
rec=

# Uptime in centiseconds (monotonic), read with a builtin.
clock() {
  read -r up _ </proc/uptime
  now=\${up%.*}\${up#*.}
}

# The process runs (no zombie) with start time $2 (field 22 of /proc/<pid>/stat, counted after the last ')').
alive() {
  want=$2
  s=
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
  s=\${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  case $1 in Z | X | x) return 1 ;; esac
  shift 19
  [ "$1" = "$want" ]
}

# A child of this shell, not yet reaped (so its pid was not reused): parent pid, field 4, is ours.
ours() {
  [ -n "$1" ] || return 1
  s=
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
  s=\${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  [ "$2" = "$$" ]
}

# Leading its own group (launched detached: its own session), every member is a descendant: the
# sleep, a step and what the step runs. Otherwise only the two children are ours to signal.
leads_group() {
  s=
  { read -r s </proc/$$/stat; } 2>/dev/null || return 1
  s=\${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  [ "$3" = "$$" ]
}

finish() {
  trap '' TERM INT HUP
  if leads_group; then
    kill -s TERM 0 2>/dev/null
  else
    if ours "$napper"; then kill -s TERM "$napper" 2>/dev/null; fi
    if ours "$stepper"; then kill -s TERM "$stepper" 2>/dev/null; fi
  fi
  # A step ends at once on SIGTERM, except while it flips 'current' back and restarts: wait for it.
  [ -z "$stepper" ] || wait "$stepper"
  exit 0
}
trap finish TERM INT HUP

verdict_of() {
  v=
  { read -r v vpid vstart vwake vversion <"$verdict"; } 2>/dev/null || return 1
  [ "$v" = "$token" ] || return 1
  wpid=$vpid
  wstart=$vstart
  wake=$vwake
}

# One step: the current binary, else (it failed to run one) the loop's own.
step() {
  n=$((n + 1))
  token=$$.$started.$n
  BERTH_KEEPER_TOKEN=$token "$bin" keeper-step >/dev/null &
  stepper=$!
  wait "$stepper"
  code=$?
  stepper=
  if verdict_of; then
    [ "$vversion" = "$version" ] || exec "$bin" update-loop
    return 0
  fi
  BERTH_KEEPER_TOKEN=$token BERTH_KEEPER_FALLBACK="$bin exited $code" "$self" keeper-step >/dev/null &
  stepper=$!
  wait "$stepper"
  stepper=
  verdict_of && return 0
  wpid=0
  clock
  wake=$((now + ${STEP_FAILED_RETRY_CS}))
}

clock
started=$now
while :; do
  rec=
  { read -r rec <"$pidfile"; } 2>/dev/null
  clock
  if [ "$rec" != "$seen" ] || [ "$now" -ge "$wake" ] || { [ "$wpid" != 0 ] && ! alive "$wpid" "$wstart"; }; then
    seen=$rec
    step
  fi
  sleep "$nap" &
  napper=$!
  wait "$napper"
  napper=
done
`;

/** The loop's argv: `sh -c SCRIPT update-loop <own binary> <version>`. */
export function keeperShellArgv(ownBinary: string, version: string): string[] {
  return [SHELL, "-c", KEEPER_SCRIPT, LOOP_NAME, ownBinary, version];
}

/** Pure: the line a step leaves for the loop: token, what to watch (pid and kernel start time, or 0 0), wake-up uptime (cs), version. */
export function verdictLine(input: { token: string; watch?: PidRecord; wakeAtCs: number; version: string }): string {
  const start = input.watch?.processStartTime.split("/").pop() ?? "0";
  return `${input.token} ${input.watch ? input.watch.pid : 0} ${input.watch ? start : 0} ${Math.ceil(input.wakeAtCs)} ${input.version}\n`;
}
