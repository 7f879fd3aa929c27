"""Run each Molecule scenario against the VM lab, one pytest test per scenario.

Each scenario boots its own guests, so these tests take minutes, not seconds.
A scenario's full output goes to tests/output/molecule-NAME.log; a failure
shows its last lines. Select scenarios with -k, e.g. `-k sessions`.
"""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "output"

# In the order they run: each later scenario leans on what the earlier ones prove.
SCENARIOS = ["sessions", "ppp_bridge", "ppp_kmod", "rollout"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log_path = OUTPUT / f"molecule-{scenario}.log"
    with open(log_path, "w") as log:
        env = dict(os.environ, NO_COLOR="1", PY_COLORS="0", ANSIBLE_NOCOLOR="1")
        result = subprocess.run(["molecule", "test", "-s", scenario], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)

    if result.returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()
        tail = "\n".join(lines[-150:])
        pytest.fail(f"molecule test -s {scenario} failed (exit {result.returncode}); "
                    f"full log: {log_path}\n{tail}", pytrace=False)
