"""Quality gates: lint, sanity, changelog, and the collection as users install it.

These run on the controller only and need no guest.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(path.name for path in (REPO / "roles").glob("*") if path.is_dir())
MODULES = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("*.py")
                 if path.stem != "__init__")

# ansible-test runs these sanity tests in virtual environments of their own,
# which it bootstraps with a pip script downloaded from a host outside the
# package registries this project may reach, so they cannot run here.
SANITY_NEEDS_PIP_BOOTSTRAP = ["ansible-doc", "changelog", "import", "pep8", "pylint", "runtime-metadata",
                              "validate-modules", "yamllint"]


def run(argv, cwd=REPO, env=None, check=True):
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} failed (exit {result.returncode}):\n"
                    f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}", pytrace=False)
    return result


def tracked_files():
    listing = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    return [name for name in listing.split("\0") if name and (REPO / name).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the collection tarball and install it, as a user would."""
    work = tmp_path_factory.mktemp("collection")
    run(["ansible-galaxy", "collection", "build", "--output-path", str(work), str(REPO)])
    tarballs = list(work.glob("l2tp-lac-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    run(["ansible-galaxy", "collection", "install", "--force", "-p", str(work / "collections"), str(tarballs[0])])
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(work / "collections"), ANSIBLE_NOCOLOR="1")
    return env


def test_ansible_lint_production():
    run(["ansible-lint", "--nocolor", "--profile", "production"])


def test_changelog_fragments_valid():
    run(["antsibull-changelog", "lint"])
    run(["antsibull-changelog", "lint-changelog-yaml", "changelogs/changelog.yaml"])


def test_ansible_test_sanity(tmp_path):
    # ansible-test wants the tree at ansible_collections/NAMESPACE/NAME.
    tree = tmp_path / "ansible_collections" / "l2tp" / "lac"
    for name in tracked_files():
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    skips = [option for test in SANITY_NEEDS_PIP_BOOTSTRAP for option in ("--skip-test", test)]
    run(["ansible-test", "sanity", "--python", "3.11", "--color", "no", *skips], cwd=tree)


@pytest.mark.parametrize("module", MODULES)
def test_installed_module_doc_renders(installed, module):
    result = run(["ansible-doc", f"l2tp.lac.{module}"], env=installed)
    assert f"> MODULE l2tp.lac.{module}" in result.stdout
    assert "RETURN VALUES" in result.stdout


def test_installed_site_playbook_by_fqcn(installed):
    run(["ansible-playbook", "--syntax-check", "-i", "localhost,", "l2tp.lac.site"], env=installed)


def test_installed_module_runs_by_fqcn(installed):
    # The controller has no PPP at all, so the module must succeed and list no channels.
    result = run(["ansible", "localhost", "-m", "l2tp.lac.ppp_channel_info", "-a", "probe=false"],
                 env=installed)
    assert '"channels": []' in result.stdout


@pytest.mark.parametrize("role", ROLES)
def test_role_has_argument_specs(role):
    assert (REPO / "roles" / role / "meta" / "argument_specs.yml").is_file()


def test_role_rejects_invalid_variable(installed):
    result = run(["ansible", "localhost", "-m", "ansible.builtin.include_role",
                  "-a", "name=l2tp.lac.ppp_kmod", "-e", "ppp_kmod_swap_now=perhaps"],
                 env=installed, check=False)
    assert result.returncode != 0
    assert "ppp_kmod_swap_now" in result.stdout + result.stderr
