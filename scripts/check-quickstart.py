#!/usr/bin/env python3
"""Runs the README's quickstart as written and checks the output it shows.

The block between `<!-- quickstart:begin -->` and `<!-- quickstart:end -->` is run step by step
in one bash, from the repository's root, as a reader would type it (variables, PATH and background
jobs carry over from step to step). A step is a command line (with `\\` continuations); the
`#=> TEXT` lines after it are output it must print, each on a line of its own, where `...` stands
for anything. A step fails when it exits non-zero (except `kill` and `wait`, whose status is the
stopped job's) or when an expected line is missing. The lines after the `# Clean up` comment are
not steps: they run, their failures ignored, before the first step (to clear what an interrupted
run left), after a failure and at the end.
Each step has a deadline of its own: the release build an hour (a fresh clone builds every
dependency), and so has the clean-up before the first step (`netlab/netlab down` builds netlab
there on a fresh clone); every other step 15 minutes. A step that passes its deadline fails the check: the
script's processes are stopped and the clean-up lines run, so a hung step leaves no lab behind.
Needs root, as the quickstart does.
"""
import os
import re
import shlex
import subprocess
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_DEADLINE = 3600  # seconds, a step running `swift build`
STEP_DEADLINE = 900    # seconds, any other step


def steps_of(readme):
    m = re.search(r"<!-- quickstart:begin -->\s*```sh\n(.*?)```\s*<!-- quickstart:end -->", readme, re.S)
    if not m:
        sys.exit("check-quickstart: no quickstart block in README.md")
    steps, cleanup, pending, in_cleanup = [], [], None, False
    for line in m.group(1).split("\n"):
        if line.startswith("#=> "):
            if not (cleanup if in_cleanup else steps):
                sys.exit(f"check-quickstart: expected output before any command: {line}")
            (cleanup if in_cleanup else steps)[-1][1].append(line[4:])
            continue
        if pending is not None:
            pending += "\n" + line
            if not line.endswith("\\"):
                (cleanup if in_cleanup else steps).append((pending, []))
                pending = None
            continue
        s = line.strip()
        if s.lower().startswith("# clean up"):
            in_cleanup = True
            continue
        if not s or s.startswith("#"):
            continue
        if line.endswith("\\"):
            pending = line
            continue
        (cleanup if in_cleanup else steps).append((line, []))
    return steps, cleanup


def pattern(expected):
    # A whole line: the text as written, `...` matching anything.
    return "^" + ".*".join(re.escape(p) for p in expected.split("...")) + "$"


def script(steps, cleanup, tmp):
    out = ["set -u", f"cd {shlex.quote(ROOT)}", "exec 3>&2"]
    out.append("cleanup() { kill $(jobs -p) 2>/dev/null; wait 2>/dev/null;")
    for cmd, _ in cleanup:
        out.append(f"  {{ {cmd}\n  }} >/dev/null 2>&1;")
    out.append("  true; }")
    out.append("fail() { echo \"check-quickstart: step $1 failed: $2\" >&3; echo '--- its output:' >&3; cat \"$3\" >&3; cleanup; exit 1; }")
    # Step 0: the clean-up before the first step (netlab's first build can happen there).
    out.append(f"echo 0 > {tmp}/step")
    out.append("cleanup")
    for i, (cmd, expected) in enumerate(steps, 1):
        log = f"{tmp}/step{i}.out"
        out.append(f"echo {i} > {tmp}/step")
        out.append(f"echo {shlex.quote('+ ' + cmd)} >&3")
        out.append(f"{{ {cmd}\n}} > {log} 2>&1; rc=$?")
        out.append(f"sed 's/^/    /' {log} | head -40 >&3")
        first = cmd.split()[0]
        if first not in ("kill", "wait"):
            out.append(f"[ $rc -eq 0 ] || fail {i} \"exit status $rc\" {log}")
        for e in expected:
            out.append(f"grep -qE -- {shlex.quote(pattern(e))} {log} || fail {i} {shlex.quote('no line like: ' + e)} {log}")
    out.append("cleanup")
    out.append(f"echo 'check-quickstart: all {len(steps)} steps of the README quickstart ran as it says' >&3")
    return "\n".join(out) + "\n"


def deadline_of(cmd):
    return BUILD_DEADLINE if cmd.lstrip().startswith("swift build") else STEP_DEADLINE


def current_step(tmp):
    try:
        with open(os.path.join(tmp, "step")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return -1


def stop(proc):
    # The script runs in a session of its own: its background jobs go with it.
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            pass


def run(steps, cleanup, tmp, env):
    path = os.path.join(tmp, "quickstart.sh")
    with open(path, "w") as f:
        f.write(script(steps, cleanup, tmp))
    proc = subprocess.Popen(["bash", path], env=env, start_new_session=True)
    step, started = -1, time.monotonic()
    while proc.poll() is None:
        now = current_step(tmp)
        if now != step:
            step, started = now, time.monotonic()
        # Step 0, the clean-up before the first step, may build netlab: a build's deadline.
        cmd = steps[step - 1][0] if step > 0 else "swift build (the clean-up before the first step)"
        if step >= 0 and time.monotonic() - started > deadline_of(cmd):
            print(f"check-quickstart: step {step} failed: still running after "
                  f"{deadline_of(cmd)} s: {cmd}", file=sys.stderr)
            stop(proc)
            undo = os.path.join(tmp, "cleanup.sh")
            with open(undo, "w") as f:
                f.write(f"cd {shlex.quote(ROOT)}\n")
                f.write("".join(f"{{ {c}\n}} >/dev/null 2>&1\n" for c, _ in cleanup))
            subprocess.call(["bash", undo], env=env, timeout=900)
            return 1
        time.sleep(1)
    return proc.returncode


def main():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        steps, cleanup = steps_of(f.read())
    if not steps:
        sys.exit("check-quickstart: the quickstart has no steps")
    with tempfile.TemporaryDirectory(prefix="sy-quickstart-") as tmp:
        return run(steps, cleanup, tmp, dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
