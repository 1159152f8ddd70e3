/**
 * The resident part of the keeper on Linux: a POSIX-sh loop (dash, busybox
 * ash) that the Bun `update-loop` replaces itself with (execve: same pid,
 * same start time, so updater.pid's identity still holds). Idle it forks
 * only `sleep`, and reads with builtins: the app-server's pidfile, wanted.json and, for
 * the record it watches, /proc/<pid>/stat (state and start time, field 22).
 *
 * It runs the current managed binary for everything else (src/update/loop.ts):
 * - `keeper-step` when the record or the wish changed, the watched server is gone or
 *   changed, or the keeper's deadline (backoff) came: the keeper's decision
 *   and restart; it writes back what to watch and when (`daemon/keeper-next`).
 * - `update-step` in the background when the updater's deadline came (the
 *   first check, every interval, a deferred restart's retry), so a long
 *   download never keeps the loop from noticing a crash; it writes back when
 *   it is due again (`daemon/update-next`).
 * A step of another version than the loop's re-executes `update-loop` from the
 * current binary (once no update step runs), so the loop runs the newest
 * working release. Before each launch the loop checks the binary's ownership
 * and modes as berth does (find -L). A current binary that is not safe to
 * run, or cannot run a step (exits without a verdict, or hangs before berth's
 * code runs: each step has deadlines), is replaced for that step by the
 * loop's own, which then fails the restart like a crash.
 *
 * SIGTERM/INT/HUP end the loop at once: it signals its own group (the sleep,
 * the steps and what they run) and waits for the steps, which end at once
 * except while one flips `current` back and restarts (termination.ts).
 */
import { join } from "node:path";
import { PID_LOCK_WAIT_MS } from "../daemon/backend.ts";
import type { PidRecord } from "../daemon/pidfile.ts";

/** argv[0] of the loop, so /proc/<pid>/cmdline still names it (daemon/orphans.ts, tests). */
export const LOOP_NAME = "update-loop";
/** The loop's tick: a crash is noticed within this (spec: 1 s). Integer `sleep 1` where `sleep` takes no fraction. */
export const TICK_SECONDS = "0.5";
/**
 * When neither binary could run a step, try again this much later (centiseconds, the loop's clock),
 * times the failures in a row, up to STEP_FAILED_MAX_TIMES: a lasting problem (an unsafe state folder)
 * costs a few starts an hour, not one every few seconds.
 */
const STEP_FAILED_RETRY_CS = 1_000;
const STEP_FAILED_MAX_TIMES = 30;
/** A step must say it started (berth's code runs) within this, else it is killed: a broken binary that hangs. */
const STEP_ANNOUNCE_CS = 1_000;
/** A keeper step's whole deadline, at least (a restart waits for the pidfile lock, then up to startTimeoutMs). */
const KEEPER_STEP_MIN_MAX_MS = 300_000;
/** Over the restart's own waits, a keeper step may take this much more before it is stopped. */
const KEEPER_STEP_SLACK_MS = 60_000;
/** An update step's whole deadline (a download of a release on a slow link included; each of its waits has its own). */
const UPDATE_STEP_MAX_CS = 360_000;
/** Past its deadline a step gets SIGTERM (it ends at once, except in the middle of a rollback), then after this SIGKILL. */
const STEP_KILL_GRACE_CS = 6_000;

export const SHELL = "/bin/sh";

/** The files steps write (temp+rename) and the loop reads with `read`. */
export function keeperVerdictPath(daemonDir: string): string {
  return join(daemonDir, "keeper-next");
}

export function updateVerdictPath(daemonDir: string): string {
  return join(daemonDir, "update-next");
}

/**
 * Carries KEEPER_SCRIPT to the loop's sh (keeperShellEnv), so the script is not in its argv: `ps` shows
 * `sh -c eval … update-loop <binary> <version> …`, not kilobytes of shell. The script unsets it at once,
 * so nothing the loop starts (steps, the app-server, its sessions) inherits it.
 */
export const KEEPER_SCRIPT_ENV = "BERTH_KEEPER_SCRIPT";

// The script: $0 = update-loop, $1 = the binary that exec'd this loop, $2 = its version, then where the
// setup's own first step left off, the keeper step's deadline and the user's uid (keeperShellArgv); BERTH_HOME
// in the environment.
// shellcheck-clean as `sh` (test/keeper-sh.test.ts runs shellcheck on it).
export const KEEPER_SCRIPT = `unset ${KEEPER_SCRIPT_ENV}
set -u
self=$1
version=$2
seen=$3
wpid=$4
wstart=$5
wake=$6
uwake=$7
kmax=$8
uid=$9
bin=$BERTH_HOME/packages/standalone/current/berth
pidfile=$BERTH_HOME/daemon/app-server.pid
wantedfile=$BERTH_HOME/daemon/wanted.json
kverdict=$BERTH_HOME/daemon/keeper-next
uverdict=$BERTH_HOME/daemon/update-next
nap=${TICK_SECONDS}
sleep 0.01 2>/dev/null || nap=1
napper=
kpid=
ktoken=
kann=0
kfb=0
kfails=0
kdeadline=0
upid=
utoken=
uann=0
ufb=0
ufails=0
bad=
launched=
fallback=0
udeadline=0
reexec=0
n=0
now=0
up=0
rec=
s=
v=

# $1 is a file the loop may read: a regular one, not a symlink (a FIFO would block the loop, /dev/zero never ends).
plain() {
  [ -f "$1" ] && [ ! -h "$1" ]
}

# Uptime in centiseconds (monotonic), read with a builtin.
# As 100 * seconds + the 1xx of the hundredths - 100: "058" would be octal to $(( )), and "008" ends dash.
clock() {
  read -r up _ </proc/uptime
  now=$((\${up%.*} * 100 + 1\${up#*.} - 100))
}

# Fields of /proc/$1/stat after the command name (which may hold spaces and parentheses), in $s.
stat_of() {
  s=
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
  s=\${s##*) }
}

# The process runs (no zombie) with start time $2 (field 22).
alive() {
  want=$2
  stat_of "$1" || return 1
  # shellcheck disable=SC2086
  set -- $s
  case $1 in Z | X | x) return 1 ;; esac
  shift 19
  [ "$1" = "$want" ]
}

# A child of this shell that has not exited (not reaped, so its pid was not reused).
running() {
  [ -n "$1" ] || return 1
  stat_of "$1" || return 1
  # shellcheck disable=SC2086
  set -- $s
  case $1 in Z | X | x) return 1 ;; esac
  [ "$2" = "$$" ]
}

# Leading its own group (launched detached, in its own session), every member descends from it.
leads_group() {
  stat_of "$$" || return 1
  # shellcheck disable=SC2086
  set -- $s
  [ "$3" = "$$" ]
}

finish() {
  trap '' TERM INT HUP
  if leads_group; then
    kill -s TERM 0 2>/dev/null
  else
    for child in "$napper" "$kpid" "$upid"; do
      if running "$child"; then kill -s TERM "$child" 2>/dev/null; fi
    done
  fi
  # Steps end at once on SIGTERM, except while one flips 'current' back and restarts: wait for them.
  wait
  exit 0
}
trap finish TERM INT HUP

# The step with token $2 has written its first line (started, or its verdict) to file $1.
announced() {
  v=
  plain "$1" && { read -r v _ <"$1"; } 2>/dev/null
  [ "$v" = "$2" ]
}

# While step $1 runs: status 0, after signalling it when past its deadline $3 (SIGKILL if it never
# said it started, $2 = 0: no berth code runs; else SIGTERM, and SIGKILL after a grace). 1 once it ended.
supervise() {
  running "$1" || return 1
  [ "$now" -ge "$3" ] || return 0
  if [ "$2" = 0 ] || [ "$now" -ge $(($3 + ${STEP_KILL_GRACE_CS})) ]; then
    kill -s KILL "$1" 2>/dev/null
  else
    kill -s TERM "$1" 2>/dev/null
  fi
  return 0
}

# Berth launches only a binary that it and every folder from BERTH_HOME down to it belong to the user
# (or root) and that no one else can write (platform/fs.ts assertTrustedBinary): find(1) checks $1, its
# folder and the folders above, links followed to what they name, right before each launch.
trusted() {
  bad=$(find -L "$BERTH_HOME" "$BERTH_HOME/packages" "$BERTH_HOME/packages/standalone" "$BERTH_HOME/packages/standalone/releases" "\${1%/*}" "$1" -prune \\( -perm -0020 -o -perm -0002 -o ! \\( -user "$uid" -o -user 0 \\) \\) -print 2>&1) || return 1
  [ -z "$bad" ]
}

# Launches $1 (keeper-step or update-step) with token $2: the current binary ($3 empty), else the loop's
# own ($3: why not the current one). Sets $launched and $fallback; fails when neither is safe to run.
launch() {
  if [ -z "$3" ] && trusted "$bin"; then
    fallback=0
    BERTH_KEEPER_TOKEN=$2 "$bin" "$1" >/dev/null &
  elif trusted "$self"; then
    fallback=1
    BERTH_KEEPER_TOKEN=$2 BERTH_KEEPER_FALLBACK="\${3:-$bin is missing or not safe to run}" "$self" "$1" >/dev/null &
  else
    return 1
  fi
  launched=$!
}

# A keeper step ($1 as for launch); neither binary safe to run counts as a failed step.
keeper_start() {
  n=$((n + 1))
  ktoken=k.$$.$started.$n
  kann=0
  kdeadline=$((now + ${STEP_ANNOUNCE_CS}))
  kpid=
  if launch keeper-step "$ktoken" "$1"; then
    kpid=$launched
    kfb=$fallback
  else
    keeper_failed
  fi
}

keeper_failed() {
  kfails=$((kfails < ${STEP_FAILED_MAX_TIMES} ? kfails + 1 : kfails))
  wpid=0
  wake=$((now + kfails * ${STEP_FAILED_RETRY_CS}))
}

keeper_poll() {
  if [ "$kann" = 0 ] && announced "$kverdict" "$ktoken"; then
    kann=1
    kdeadline=$((now + kmax))
  fi
  supervise "$kpid" "$kann" "$kdeadline" && return 0
  wait "$kpid"
  code=$?
  kpid=
  v=
  ! plain "$kverdict" || { read -r v vpid vstart vwake vversion <"$kverdict"; } 2>/dev/null
  if [ "$v" = "$ktoken" ] && [ "$vpid" != started ]; then
    kfails=0
    wpid=$vpid
    wstart=$vstart
    wake=$vwake
    [ "$vversion" = fallback ] || [ "$vversion" = "$version" ] || reexec=1
  elif [ "$kfb" = 0 ]; then
    keeper_start "$bin exited $code"
  else
    keeper_failed
  fi
}

# An update step, in the background of the keeper's ($1 as for launch).
update_start() {
  n=$((n + 1))
  utoken=u.$$.$started.$n
  uann=0
  udeadline=$((now + ${STEP_ANNOUNCE_CS}))
  upid=
  if launch update-step "$utoken" "$1"; then
    upid=$launched
    ufb=$fallback
  else
    update_failed
  fi
}

update_failed() {
  ufails=$((ufails < ${STEP_FAILED_MAX_TIMES} ? ufails + 1 : ufails))
  uwake=$((now + ufails * ${STEP_FAILED_RETRY_CS}))
}

update_poll() {
  if [ "$uann" = 0 ] && announced "$uverdict" "$utoken"; then
    uann=1
    udeadline=$((now + ${UPDATE_STEP_MAX_CS}))
  fi
  supervise "$upid" "$uann" "$udeadline" && return 0
  wait "$upid"
  code=$?
  upid=
  v=
  ! plain "$uverdict" || { read -r v uw uversion <"$uverdict"; } 2>/dev/null
  if [ "$v" = "$utoken" ] && [ "$uw" != started ]; then
    ufails=0
    uwake=$uw
    [ "$uversion" = fallback ] || [ "$uversion" = "$version" ] || reexec=1
  elif [ "$ufb" = 0 ]; then
    update_start "$bin exited $code"
  else
    update_failed
  fi
}

clock
started=$now
code=0
while :; do
  # Its BERTH_HOME is gone (deleted, moved): nothing left to keep; the loop ends rather than tick for ever.
  [ -d "$BERTH_HOME/daemon" ] || finish
  rec=
  ! plain "$pidfile" || { read -r rec <"$pidfile"; } 2>/dev/null
  want=
  ! plain "$wantedfile" || { read -r want <"$wantedfile"; } 2>/dev/null
  rec="$rec|$want"
  clock
  [ -z "$kpid" ] || keeper_poll
  [ -z "$upid" ] || update_poll
  # A step ran another release than this loop's: the loop starts over from it, between steps.
  if [ "$reexec" = 1 ] && [ -z "$kpid" ] && [ -z "$upid" ]; then
    reexec=0
    if trusted "$bin"; then exec "$bin" update-loop; fi
  fi
  if [ -z "$kpid" ]; then
    if [ "$rec" != "$seen" ] || [ "$now" -ge "$wake" ] || { [ "$wpid" != 0 ] && ! alive "$wpid" "$wstart"; }; then
      seen=$rec
      keeper_start ""
    fi
  fi
  if [ -z "$upid" ] && [ "$now" -ge "$uwake" ]; then update_start ""; fi
  sleep "$nap" &
  napper=$!
  wait "$napper"
  napper=
done
`;

/** Where the loop starts: the pidfile line the first keeper step saw, its verdict, and when the first update step is due. */
export type LoopStart = { seen: string; watch?: PidRecord; wakeAtCs: number; updateAtCs: number };

/** Pure: how long a keeper step (one restart at most) may run, for a given start timeout. */
export function keeperStepMaxMs(startTimeoutMs: number): number {
  return Math.max(KEEPER_STEP_MIN_MAX_MS, startTimeoutMs + PID_LOCK_WAIT_MS + KEEPER_STEP_SLACK_MS);
}

/**
 * The loop's argv: `sh -c 'eval "${BERTH_KEEPER_SCRIPT:?}"' update-loop <own binary> <version> <seen> <pid>
 * <start> <wake> <update wake> <keeper step deadline> <uid>` (times in centiseconds; the uid whose files it
 * trusts, with root's); run with keeperShellEnv.
 */
export function keeperShellArgv(ownBinary: string, version: string, start: LoopStart, keeperStepMs: number, uid: number): string[] {
  const [, pid, startTime, wake] = verdictLine({ token: "-", ...(start.watch ? { watch: start.watch } : {}), wakeAtCs: start.wakeAtCs, version }).split(" ");
  const tail = [start.seen, pid as string, startTime as string, wake as string, String(Math.ceil(start.updateAtCs)), String(Math.ceil(keeperStepMs / 10)), String(uid)];
  return [SHELL, "-c", `eval "\${${KEEPER_SCRIPT_ENV}:?}"`, LOOP_NAME, ownBinary, version, ...tail];
}

/** The loop's environment: `env` and the script (see KEEPER_SCRIPT_ENV). */
export function keeperShellEnv(env: Record<string, string | undefined>): Record<string, string | undefined> {
  return { ...env, [KEEPER_SCRIPT_ENV]: KEEPER_SCRIPT };
}

/** Pure: a file's first line as the loop's `read -r` sees it (surrounding blanks dropped). */
export function firstLine(text: string | undefined): string {
  return (text ?? "").split("\n")[0]?.replace(/^[ \t]+|[ \t]+$/g, "") ?? "";
}

/**
 * Pure: what the loop compares every tick, as it builds it: the first lines of
 * the app-server's pidfile and of wanted.json. A change of either runs a
 * keeper step, so a wish written after the keeper's last look (bootstrap
 * writes it after launching the loop) is never missed.
 */
export function watchedLine(pidText: string | undefined, wantedText: string | undefined): string {
  return `${firstLine(pidText)}|${firstLine(wantedText)}`;
}

/** Pure: the line a keeper step leaves for the loop: token, what to watch (pid and kernel start time, or 0 0), wake-up uptime (cs), version. */
export function verdictLine(input: { token: string; watch?: PidRecord; wakeAtCs: number; version: string }): string {
  const start = input.watch?.processStartTime.split("/").pop() ?? "0";
  return `${input.token} ${input.watch ? input.watch.pid : 0} ${input.watch ? start : 0} ${Math.ceil(input.wakeAtCs)} ${input.version}\n`;
}

/** Pure: the line an update step leaves: token, wake-up uptime (cs), version. */
export function updateVerdictLine(input: { token: string; wakeAtCs: number; version: string }): string {
  return `${input.token} ${Math.ceil(input.wakeAtCs)} ${input.version}\n`;
}
