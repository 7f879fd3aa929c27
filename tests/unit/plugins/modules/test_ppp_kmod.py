"""Tests of the pure logic in the ppp_kmod modules: parsing, versions, module order, staging."""

import os
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.l2tp.lac.plugins.module_utils import ppp_kmod_modules
from ansible_collections.l2tp.lac.plugins.modules import ppp_kmod_dkms_source, ppp_kmod_host_info

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


def load_fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize("case", load_fixture("dkms_status.yml"), ids=lambda case: case["name"])
def test_dkms_status_parsing(case):
    entries = ppp_kmod_host_info.parse_dkms_status(case["output"], "ppp-generic-l2tp-lac")

    assert entries == case["entries"]


@pytest.mark.parametrize("case", load_fixture("module_version.yml"), ids=lambda case: case["name"])
def test_module_version_expansion(case):
    assert ppp_kmod_dkms_source.module_version(case["source"]) == case["version"]


def test_makefile_version_read():
    text = "# SPDX\nVERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 223\nEXTRAVERSION =\nNAME = Dare mighty things\n"

    assert ppp_kmod_dkms_source.makefile_version(text) == "5.10.223"


def test_makefile_version_missing():
    assert ppp_kmod_dkms_source.makefile_version("all:\n\ttrue\n") is None


def test_paths_touched_by_series():
    series = os.path.join(REPO, "kernel-patch", "debian-11-5.10")
    paths = []
    for name in sorted(os.listdir(series)):
        if name.endswith(".patch"):
            with open(os.path.join(series, name)) as handle:
                paths.append(ppp_kmod_dkms_source.paths_touched(handle.read()))

    assert paths[0] == ["include/uapi/linux/ppp-ioctl.h"]
    assert all(touched == ["drivers/net/ppp/ppp_generic.c"] for touched in paths[1:])


def test_users_summary_when_unused():
    assert ppp_kmod_host_info.describe_users(0, {}, [], []) == "nothing uses PPP"


def test_users_summary_names_holders():
    summary = ppp_kmod_host_info.describe_users(
        5, {"pppoe": 2, "ppp_generic": 3}, [{"pid": 812, "command": "pppd"}],
        [{"netns": 1, "kind": "pppoe", "line": "x"}])

    assert summary.startswith("5 module references beyond module dependencies (ppp_generic 3, pppoe 2)")
    assert "1 sockets listed in /proc/net/pppoe" in summary
    assert summary.endswith("/dev/ppp open in pppd (pid 812)")


def make_sys_module(root, modules):
    """Write a fake /sys/module: {name: (refcnt, [holders])}."""
    for name, (refcnt, holders) in modules.items():
        os.makedirs(os.path.join(root, name, "holders"))
        with open(os.path.join(root, name, "refcnt"), "w") as handle:
            handle.write("%d\n" % refcnt)
        for holder in holders:
            open(os.path.join(root, name, "holders", holder), "w").close()


def test_removal_order_puts_holders_first(tmp_path, monkeypatch):
    make_sys_module(str(tmp_path), {
        "ppp_generic": (3, ["pppox", "pppoe", "l2tp_ppp"]),
        "pppox": (2, ["pppoe", "l2tp_ppp"]),
        "pppoe": (0, []),
        "l2tp_ppp": (0, []),
        "slhc": (1, ["ppp_generic"]),
    })
    monkeypatch.setattr(ppp_kmod_modules, "SYS_MODULE", str(tmp_path))

    order = ppp_kmod_modules.removal_order("ppp_generic")

    assert order == ["l2tp_ppp", "pppoe", "pppox", "ppp_generic"]


def test_removal_order_of_unloaded_module(tmp_path, monkeypatch):
    monkeypatch.setattr(ppp_kmod_modules, "SYS_MODULE", str(tmp_path))

    assert ppp_kmod_modules.removal_order("ppp_generic") == []


def test_builtin_module_is_not_loaded(tmp_path, monkeypatch):
    # Built-in modules with parameters have a /sys/module folder but no refcnt.
    os.makedirs(os.path.join(str(tmp_path), "ppp_generic", "parameters"))
    monkeypatch.setattr(ppp_kmod_modules, "SYS_MODULE", str(tmp_path))

    assert ppp_kmod_modules.loaded_module("ppp_generic") is None


PATCH_TOOL = shutil.which("patch")


class FakeModule:
    """The parts of AnsibleModule that SourceStager uses, running real commands."""

    def __init__(self, params, check_mode=False):
        self.params = params
        self.check_mode = check_mode

    def run_command(self, argv, environ_update=None):
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        return result.returncode, result.stdout, result.stderr

    def fail_json(self, msg, **kwargs):
        raise AssertionError(msg)


def series_patches(names=None):
    series = os.path.join(REPO, "kernel-patch", "debian-11-5.10")
    patches = []
    for name in sorted(os.listdir(series)):
        if name.endswith(".patch") and (names is None or name[:4] in names):
            with open(os.path.join(series, name)) as handle:
                patches.append({"name": name, "content": handle.read()})
    return patches


def make_tree(root, version_line):
    """Write a kernel tree whose ppp_generic.c is too small for the series' context."""
    os.makedirs(os.path.join(root, "drivers", "net", "ppp"))
    os.makedirs(os.path.join(root, "include", "uapi", "linux"))
    with open(os.path.join(root, "Makefile"), "w") as handle:
        handle.write(version_line)
    with open(os.path.join(root, "drivers", "net", "ppp", "ppp_generic.c"), "w") as handle:
        handle.write("/* not the 5.10 driver */\n")
    with open(os.path.join(root, "include", "uapi", "linux", "ppp-ioctl.h"), "w") as handle:
        handle.write("/* not the 5.10 header */\n")


def stager_params(tmp_path, source, **overrides):
    params = {
        "source": source, "kernel_version": "5.10.223", "cache_dir": str(tmp_path / "cache"),
        "patches": series_patches(), "allow_offset": False, "kbuild": "obj-m := ppp_generic.o",
        "package_name": "ppp-generic-l2tp-lac", "src_root": str(tmp_path / "src"),
        "build_exclusive_kernel": "^5\\.10\\.", "dest_module_location": "/updates/dkms", "sign_command": None,
    }
    params.update(overrides)
    return params


def test_stage_rejects_other_kernel_version(tmp_path):
    tree = str(tmp_path / "tree")
    make_tree(tree, "VERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 234\n")
    stager = ppp_kmod_dkms_source.SourceStager(FakeModule(stager_params(tmp_path, tree)))

    with pytest.raises(ppp_kmod_dkms_source.SourceError) as raised:
        stager.stage()

    assert "is Linux 5.10.234, but the running kernel is 5.10.223" in str(raised.value)


@pytest.mark.skipif(PATCH_TOOL is None, reason="GNU patch is not installed")
def test_stage_rejects_series_that_does_not_apply(tmp_path):
    tree = str(tmp_path / "tree")
    make_tree(tree, "VERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 223\n")
    stager = ppp_kmod_dkms_source.SourceStager(FakeModule(stager_params(tmp_path, tree)))

    with pytest.raises(ppp_kmod_dkms_source.SourceError) as raised:
        stager.stage()

    assert str(raised.value).startswith("0001-ppp-define-the-channel-bridge-ioctl-numbers.patch does not apply")
    assert not os.path.exists(str(tmp_path / "src"))


def test_stage_needs_a_patch_of_ppp_generic(tmp_path):
    tree = str(tmp_path / "tree")
    make_tree(tree, "VERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 223\n")
    params = stager_params(tmp_path, tree, patches=series_patches(names=["0001"]))
    stager = ppp_kmod_dkms_source.SourceStager(FakeModule(params))

    with pytest.raises(ppp_kmod_dkms_source.SourceError) as raised:
        stager.stage()

    assert "no selected patch changes drivers/net/ppp/ppp_generic.c" in str(raised.value)


def test_sign_script_passes_kernel_and_module(tmp_path):
    # A stand-in for sign-file that prints its arguments, one per line.
    printer = tmp_path / "print-args"
    printer.write_text('#!/bin/sh\nfor argument in "$@"; do echo "$argument"; done\n')
    printer.chmod(0o755)
    params = stager_params(tmp_path, "unused", sign_command=[
        str(printer), "sha256", "/root/mok key.priv", "/lib/modules/{kernel}/mok.der"])
    script = tmp_path / "sign-module"
    script.write_text(ppp_kmod_dkms_source.SourceStager(FakeModule(params)).sign_script())

    output = subprocess.run(["sh", str(script), "5.10.0-32-amd64", "/var/lib/dkms/ppp_generic.ko"],
                            stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout

    assert output.splitlines() == ["sha256", "/root/mok key.priv", "/lib/modules/5.10.0-32-amd64/mok.der",
                                   "/var/lib/dkms/ppp_generic.ko"]
