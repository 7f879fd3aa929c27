#!/usr/bin/env python3
"""Figure P3 of the l2tp.lac benchmarks: a second site.yml run on a converged host against the first.

Runs on the controller, not in the guest, because site.yml reaches the guest
through Ansible. bench/run.sh calls it after it has copied the session fixture
to /root/l2tp-bench in the guest. Steps:

1. Build the collection and install it from its tarball into the work folder.
2. Start the session fixture in the guest (N sessions, no pppd peers).
3. Declare a bridge per fixture session by descriptor (PPPoE interface and
   session id, L2TP tunnel and session id) and run `l2tp.lac.site` twice.
   Before the second run, drop a marker file in the guest. After it, no
   module under /lib/modules and no DKMS build log may be newer than the
   marker: that is the "no rebuild" check.
4. Print both wall-clock times, the changed counts from the play recap, the
   ratio and the goal, and append one JSON line to --json.

On a kernel that needs the patched ppp_generic (Debian 11), the first run
builds it with DKMS and swaps it in. The swap stops the fixture with the
role's drain command and starts it again with its resume command, the way an
operator's session daemon would be stopped and started.
"""

import argparse
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time

P3_GOAL = 0.25
GUEST_ROOT = "/root/l2tp-bench"
GUEST_FIXTURE = GUEST_ROOT + "/ppp_sessions.py"
GUEST_MARKER = "/run/l2tp-lac-bench-p3-marker"
# ppp_bridge's default record file (bridge_records.DEFAULT_RECORD_DIR), on a tmpfs that a boot empties.
RECORD_FILE = "/run/l2tp-lac/bridges.json"
EXIT_CANNOT_RUN = 3

RECAP_LINE = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
                        r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.MULTILINE)

# Prints the guest's facts in the form benchlib.describe_guest returns them.
DESCRIBE_GUEST = ("import json, sys; sys.path.insert(0, %r); import benchlib; "
                  "print(json.dumps(benchlib.describe_guest()))" % (GUEST_ROOT + "/bench"))

# Lists the kernel modules and DKMS build logs changed since the marker, so empty output means no rebuild.
CHANGED_BUILDS = ("find /lib/modules/$(uname -r) /var/lib/dkms -newer %s "
                  "\\( -name '*.ko' -o -name '*.ko.*' -o -name make.log \\) 2>/dev/null || true" % GUEST_MARKER)


class BenchError(Exception):
    """A step of the figure failed."""


class CannotRun(Exception):
    """The guest is not in the state the figure needs."""


class Guest:
    """SSH access to the lab guest described by the first entry of a `lab.py up --json` file."""

    def __init__(self, guests_json):
        with open(guests_json) as source:
            entry = json.load(source)[0]
        self.entry = entry
        self.name = entry["instance"]

    def ssh_command(self, command):
        return ["ssh", "-i", self.entry["identity_file"], "-p", str(self.entry["port"]),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "%s@%s" % (self.entry["user"], self.entry["address"]), command]

    def run(self, command, step):
        """Run ``command`` in the guest and return its output; ``step`` names it in the error."""
        result = subprocess.run(self.ssh_command(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True)
        if result.returncode != 0:
            raise BenchError("%s failed in guest %s (exit %d): %s"
                             % (step, self.name, result.returncode, result.stderr.strip() or result.stdout.strip()))
        return result.stdout

    def inventory(self, host_vars):
        host = dict(host_vars)
        host.update({
            "ansible_host": self.entry["address"],
            "ansible_port": self.entry["port"],
            "ansible_user": self.entry["user"],
            "ansible_ssh_private_key_file": self.entry["identity_file"],
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_python_interpreter": "/usr/bin/python3",
        })
        return {"lac": {"hosts": {self.name: host}}}


def install_collection(repo, work):
    """Build the collection from ``repo`` and install the tarball under ``work``; return the collections path."""
    collections = os.path.join(work, "collections")
    for tarball in glob.glob(os.path.join(work, "l2tp-lac-*.tar.gz")):
        os.remove(tarball)
    _run_or_raise(["ansible-galaxy", "collection", "build", "--force", "--output-path", work, repo])
    tarballs = glob.glob(os.path.join(work, "l2tp-lac-*.tar.gz"))
    _run_or_raise(["ansible-galaxy", "collection", "install", "--force", "-p", collections] + tarballs)
    return collections


def _run_or_raise(command):
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if result.returncode != 0:
        raise BenchError("%s failed: %s" % (" ".join(command[:3]), result.stdout.strip()))


def start_fixture(guest, sessions):
    """Start the session fixture in the guest and return its sessions."""
    print("  starting the session fixture with %d sessions" % sessions, flush=True)
    started = time.monotonic()
    output = guest.run("python3 %s up --sessions %d --peers 0" % (GUEST_FIXTURE, sessions),
                       "starting the session fixture")
    print("  fixture ready in %.0f s" % (time.monotonic() - started), flush=True)
    return json.loads(output)["sessions"]


def declared_bridges(sessions):
    """Return lac_bridges for the fixture's sessions, each end by its session descriptor."""
    bridges = []
    for session in sessions:
        pppoe = session["pppoe"]
        l2tp = session["l2tp"]
        bridges.append({
            "name": "bench-%d" % session["index"],
            "a": {"pppoe": {"interface": pppoe["interface"], "session_id": pppoe["session_id"]}},
            "b": {"l2tp": {"tunnel_id": l2tp["tunnel_id"], "session_id": l2tp["session_id"]}},
        })
    return bridges


def host_vars(sessions, bridges):
    fixture = "python3 " + GUEST_FIXTURE
    return {
        "lac_netns": "lac",
        "lac_bridges": bridges,
        # On Debian 11 the role swaps ppp_generic, which needs the fixture's PPP sockets closed.
        "ppp_kmod_swap_now": True,
        "ppp_kmod_drain_command": fixture + " down",
        "ppp_kmod_resume_command": "%s up --sessions %d --peers 0" % (fixture, sessions),
    }


def run_site(inventory_path, environment, log_path):
    """Run l2tp.lac.site once; return (seconds, recap of the host) and keep the output in ``log_path``."""
    started = time.monotonic()
    with open(log_path, "w") as log:
        result = subprocess.run(["ansible-playbook", "-i", inventory_path, "l2tp.lac.site"],
                                stdout=log, stderr=subprocess.STDOUT, env=environment)
    seconds = time.monotonic() - started
    with open(log_path) as log:
        output = log.read()
    recaps = [match.groupdict() for match in RECAP_LINE.finditer(output)]
    if result.returncode != 0 or len(recaps) != 1:
        raise BenchError("site.yml failed (exit %d); its output is in %s" % (result.returncode, log_path))
    recap = {key: (int(value) if key != "host" else value) for key, value in recaps[0].items()}
    return seconds, recap


def summary_lines(log_path):
    """Return the message lines of the "Summarize the host" task from a run's output."""
    lines = []
    in_summary = False
    with open(log_path) as log:
        for line in log:
            text = line.strip()
            if text.startswith("TASK ["):
                in_summary = text.startswith("TASK [Summarize the host]")
            elif in_summary and text.startswith("- "):
                lines.append(text[2:].strip("'\"").replace("''", "'"))
    return lines


def measure(repo, guest, sessions, work, log_prefix):
    guest_facts = json.loads(guest.run("python3 -c %s" % shlex.quote(DESCRIBE_GUEST), "reading the guest's facts"))
    # The first run must find a host that site.yml has never converged, or P3 compares two second runs.
    if guest.run("test -e %s && echo converged || true" % RECORD_FILE, "checking for earlier runs").strip():
        raise CannotRun("guest %s has bridge records (%s) from an earlier site.yml run, and P3 needs a fresh "
                        "guest. Boot one again with 'python3 molecule/lab/lab.py down %s' and 'lab.py up', or "
                        "run bench/run.sh without --guest" % (guest.name, RECORD_FILE, guest.name))

    print("  building and installing the collection", flush=True)
    collections = install_collection(repo, work)
    fixture_sessions = start_fixture(guest, sessions)
    inventory_path = os.path.join(work, "p3-inventory.json")
    with open(inventory_path, "w") as target:
        json.dump(guest.inventory(host_vars(sessions, declared_bridges(fixture_sessions))), target)

    environment = dict(os.environ)
    environment.update({"ANSIBLE_COLLECTIONS_PATH": collections,
                        "ANSIBLE_CONFIG": os.path.join(repo, "molecule", "lab", "ansible.cfg")})
    logs = ["%s-run-%d.log" % (log_prefix, number) for number in (1, 2)]

    print("  first site.yml run (on Debian 11 it builds ppp_generic: minutes)", flush=True)
    first_seconds, first = run_site(inventory_path, environment, logs[0])
    guest.run("touch %s && sleep 1" % GUEST_MARKER, "writing the rebuild marker")
    print("  second site.yml run", flush=True)
    second_seconds, second = run_site(inventory_path, environment, logs[1])
    rebuilt = [line for line in guest.run(CHANGED_BUILDS, "looking for rebuilt modules").splitlines() if line]

    ratio = second_seconds / first_seconds
    met = second["changed"] == 0 and ratio <= P3_GOAL and not rebuilt
    return {
        "figure": "P3", "guest": guest_facts, "sessions": sessions,
        "first": {"seconds": round(first_seconds, 1), "recap": first, "summary": summary_lines(logs[0])},
        "second": {"seconds": round(second_seconds, 1), "recap": second, "summary": summary_lines(logs[1])},
        "rebuilt_files": rebuilt, "ratio": ratio, "goal": P3_GOAL, "met": met, "logs": logs,
    }


def report(result):
    guest = result["guest"]
    first = result["first"]
    second = result["second"]
    print()
    print("P3  a second site.yml run on a converged host against the first, %d declared bridges" % result["sessions"])
    print("    kernel %s, %s, %d vCPUs, Python %s, %s"
          % (guest["kernel"], guest["distribution"], guest["cpus"], guest["python"], guest["date"]))
    for label, run in (("first run: ", first), ("second run:", second)):
        recap = run["recap"]
        print("    %s %7.1f s   ok=%d changed=%d failed=%d"
              % (label, run["seconds"], recap["ok"], recap["changed"], recap["failed"]))
    for line in first["summary"]:
        print("      first run:  %s" % line)
    for line in second["summary"]:
        print("      second run: %s" % line)
    print("    rebuilt or reinstalled modules during the second run: %s"
          % (", ".join(result["rebuilt_files"]) or "none"))
    print("    ratio second / first: %.2f   goal 0 changed, at most %.2f, no rebuild: %s"
          % (result["ratio"], result["goal"], "met" if result["met"] else "NOT met"))
    if "kernel: bridging native" in first["summary"]:
        print("    NOTE: the kernel bridges natively, so the first run built no module and both runs are mostly\n"
              "    Ansible's cost per task. The 25% goal is about a first run that builds the module (Debian 11).")
    print("    site.yml output: %s" % ", ".join(result["logs"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guest", required=True, help="the JSON file that `lab.py up --json` wrote")
    parser.add_argument("--sessions", type=int, default=1000, help="fixture sessions and declared bridges (default 1000)")
    parser.add_argument("--work", required=True, help="a scratch folder for the collection and the inventory")
    parser.add_argument("--log-prefix", required=True,
                        help="path prefix of the two files that keep each run's site.yml output")
    parser.add_argument("--json", help="append the result as a JSON line to this file")
    args = parser.parse_args(argv)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    try:
        result = measure(repo, Guest(args.guest), args.sessions, args.work, args.log_prefix)
    except CannotRun as exc:
        print("P3  cannot run: %s" % exc)
        return EXIT_CANNOT_RUN
    except BenchError as exc:
        print("P3  failed: %s" % exc)
        return 1
    report(result)
    if args.json:
        with open(args.json, "a") as target:
            target.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
