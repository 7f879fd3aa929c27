#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Ansible module l2tp.lac.ppp_kmod_dkms_source: prepare the DKMS source tree of ppp_generic.

Unpacks the files a patch series touches from a kernel source tarball, or
copies them from an unpacked tree, and applies the series with no fuzz. The
patched ppp_generic.c, the Kbuild file and a dkms.conf go to
/usr/src/NAME-VERSION, where VERSION is the MODULE_VERSION of the result.
The pristine files are cached, so the slow unpacking happens once per
tarball.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ppp_kmod_dkms_source
version_added: 0.1.0
short_description: Unpack, patch and stage ppp_generic.c as a DKMS source tree for the ppp_kmod role
description:
  - Internal to the C(l2tp.lac.ppp_kmod) role, which is its only supported caller; its options may change.
  - Unpacks only the top-level Makefile and the files the patches touch. Unpacking them from an xz tarball still
    decompresses it up to the last of them, which took 50 s for linux-source-5.10 in a TCG guest of the VM lab, so
    the pristine files are kept in O(cache_dir) and later runs take a second.
  - Reports changed only when a file under the DKMS source directory was written.
options:
  source:
    description: A kernel source tarball, or the top directory of an unpacked kernel tree.
    type: path
    required: true
  kernel_version:
    description:
      - The upstream version (VERSION.PATCHLEVEL.SUBLEVEL) of the running kernel. The source's top-level Makefile
        must give the same version.
    type: str
    required: true
  cache_dir:
    description: Where pristine files unpacked from tarballs are kept, one folder per tarball.
    type: path
    required: true
  patches:
    description: The patches to apply in order, each with its file name and content, in C(patch -p1) format.
    type: list
    elements: dict
    required: true
    options:
      name:
        description: The patch file name, used in messages.
        type: str
        required: true
      content:
        description: The patch text.
        type: str
        required: true
  allow_offset:
    description: Accept hunks that apply at an offset. Fuzz is never accepted.
    type: bool
    default: false
  kbuild:
    description: The content of the Kbuild file that builds ppp_generic.o out of tree.
    type: str
    required: true
  package_name:
    description: The DKMS package name (PACKAGE_NAME).
    type: str
    required: true
  src_root:
    description: The DKMS source root; the tree goes to O(src_root)/O(package_name)-VERSION.
    type: path
    default: /usr/src
  build_exclusive_kernel:
    description: The BUILD_EXCLUSIVE_KERNEL regular expression of dkms.conf.
    type: str
    required: true
  dest_module_location:
    description: The DEST_MODULE_LOCATION of dkms.conf.
    type: str
    default: /updates/dkms
  sign_command:
    description:
      - The argument vector of the program that signs a module, without the module file, for example
        C([/lib/modules/5.10.0-32-amd64/build/scripts/sign-file, sha256, KEY, CERT]). The first element may contain
        C({kernel}), replaced by the release DKMS builds for.
      - When set, a script C(sign-module) is written next to dkms.conf and named in SIGN_TOOL.
    type: list
    elements: str
author:
  - l2tp.lac maintainers
"""

EXAMPLES = r"""
- name: Stage the patched ppp_generic.c for DKMS
  l2tp.lac.ppp_kmod_dkms_source:
    source: /usr/src/linux-source-5.10.tar.xz
    kernel_version: 5.10.223
    cache_dir: /var/cache/l2tp-lac/ppp_kmod
    patches:
      - name: 0001-example.patch
        content: "{{ lookup('ansible.builtin.file', 'kernel-patch/debian-11-5.10/0001-example.patch') }}"
    kbuild: "obj-m := ppp_generic.o"
    package_name: ppp-generic-l2tp-lac
    build_exclusive_kernel: ^5\.10\.
  become: true
"""

RETURN = r"""
version:
  description: The MODULE_VERSION of the patched ppp_generic.c, which is also the DKMS PACKAGE_VERSION.
  returned: success
  type: str
  sample: 2.4.2-l2tp-lac.1
path:
  description: The DKMS source directory.
  returned: success
  type: str
  sample: /usr/src/ppp-generic-l2tp-lac-2.4.2-l2tp-lac.1
unpacked:
  description: Whether the files were unpacked from the tarball in this run rather than taken from the cache.
  returned: success
  type: bool
  sample: false
written:
  description: The files under RV(path) that were written because they were missing or different.
  returned: success
  type: list
  elements: str
  sample: []
replaced:
  description: Whether RV(path) existed with other content before, so that a DKMS build of it is outdated.
  returned: success
  type: bool
  sample: false
patch_output:
  description: What C(patch) printed for each patch.
  returned: success
  type: list
  elements: str
  sample: ["0002-ppp-define-the-bridge-ioctls-when-the-header-lacks-t.patch: patching file drivers/net/ppp/ppp_generic.c"]
"""

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule

PATCHED_FILE = "drivers/net/ppp/ppp_generic.c"
STAMP = ".l2tp-lac-unpacked.json"


class SourceError(Exception):
    """The source cannot be prepared. The message gives the reason and the fix."""


def paths_touched(patch_text):
    """Return the tree paths that a -p1 patch modifies."""
    paths = []
    for line in patch_text.splitlines():
        if line.startswith("+++ b/"):
            path = line[len("+++ b/"):].split("\t")[0].strip()
            if path not in paths:
                paths.append(path)
    return paths


def makefile_version(text):
    fields = {}
    for line in text.splitlines():
        match = re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\S*)", line)
        if match:
            fields[match.group(1)] = match.group(2)
    if not fields.get("VERSION") or not fields.get("PATCHLEVEL"):
        return None
    return "%s.%s.%s" % (fields["VERSION"], fields["PATCHLEVEL"], fields.get("SUBLEVEL") or "0")


def module_version(source_text):
    """Return the string that MODULE_VERSION(...) in ppp_generic.c expands to, or None.

    Only string literals and #define'd string macros of this file are expanded,
    which covers MODULE_VERSION(PPP_VERSION "-l2tp-lac.1").
    """
    match = re.search(r"^MODULE_VERSION\((.*)\);\s*$", source_text, re.MULTILINE)
    if not match:
        return None
    macros = dict(re.findall(r'^#define\s+(\w+)\s+"([^"]*)"\s*$', source_text, re.MULTILINE))
    parts = []
    for literal, name in re.findall(r'"([^"]*)"|(\w+)', match.group(1)):
        if name:
            if name not in macros:
                return None
            parts.append(macros[name])
        else:
            parts.append(literal)
    return "".join(parts)


def tarball_cache_key(path):
    status = os.stat(path)
    identity = "%s\n%d\n%d" % (os.path.realpath(path), status.st_size, status.st_mtime_ns)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class SourceStager:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.patch_output = []

    def fail(self, message, **extra):
        self.module.fail_json(msg=message, patch_output=self.patch_output, **extra)

    def needed_paths(self):
        paths = ["Makefile"]
        for patch in self.params["patches"]:
            for path in paths_touched(patch["content"]):
                if path not in paths:
                    paths.append(path)
        if PATCHED_FILE not in paths:
            raise SourceError("no selected patch changes %s, so there is nothing to build; select the patches of "
                              "the series that add channel bridging" % PATCHED_FILE)
        return paths

    def pristine_tree(self, paths):
        """Return (directory holding the pristine files, whether they were unpacked now)."""
        source = self.params["source"]
        if os.path.isdir(source):
            for path in paths:
                if not os.path.isfile(os.path.join(source, path)):
                    raise SourceError("%s is not in the kernel tree %s; give the top directory of a kernel source "
                                      "tree" % (path, source))
            return source, False
        if not os.path.isfile(source):
            raise SourceError("the kernel source %s does not exist" % source)

        cache = os.path.join(self.params["cache_dir"], tarball_cache_key(source))
        stamp = os.path.join(cache, STAMP)
        if os.path.isfile(stamp):
            with open(stamp) as handle:
                if set(json.load(handle)["paths"]) >= set(paths):
                    return cache, False
        if self.module.check_mode:
            return None, True
        self.unpack(source, cache, paths)
        return cache, True

    def unpack(self, tarball, cache, paths):
        try:
            with tarfile.open(tarball) as archive:
                first = archive.next()
        except (tarfile.TarError, IOError, OSError) as exc:
            raise SourceError("cannot read %s as a tar archive: %s" % (tarball, exc))
        if first is None:
            raise SourceError("%s is an empty tar archive" % tarball)
        top = first.name.split("/")[0]

        parent = os.path.dirname(cache)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        work = tempfile.mkdtemp(prefix=".unpack-", dir=parent)
        try:
            # GNU tar picks the decompressor itself. A tar stream has no index,
            # so tar reads until the last member it needs, and --occurrence makes
            # it stop there instead of reading on to the end.
            argv = (["tar", "-xf", tarball, "-C", work, "--occurrence"]
                    + ["%s/%s" % (top, path) for path in paths])
            rc, out, err = self.module.run_command(argv)
            if rc != 0:
                raise SourceError("unpacking %s from %s failed (tar exit status %d): %s"
                                  % (", ".join(paths), tarball, rc, (err or out).strip()))
            with open(os.path.join(work, top, STAMP), "w") as handle:
                json.dump({"tarball": tarball, "paths": paths}, handle)
            if os.path.isdir(cache):
                shutil.rmtree(cache)
            os.rename(os.path.join(work, top), cache)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def check_version(self, tree):
        with open(os.path.join(tree, "Makefile")) as handle:
            found = makefile_version(handle.read())
        expected = self.params["kernel_version"]
        if found != expected:
            raise SourceError("the source %s is Linux %s, but the running kernel is %s; give the source of "
                              "exactly the running kernel" % (self.params["source"], found, expected))

    def apply_patches(self, pristine, paths, work):
        tree = os.path.join(work, "tree")
        for path in paths:
            target = os.path.join(tree, path)
            if not os.path.isdir(os.path.dirname(target)):
                os.makedirs(os.path.dirname(target))
            shutil.copyfile(os.path.join(pristine, path), target)

        for patch in self.params["patches"]:
            patch_file = os.path.join(work, "current.patch")
            with open(patch_file, "w") as handle:
                # Ansible's file lookup strips the final newline, which patch needs.
                handle.write(patch["content"].rstrip("\n") + "\n")
            rc, out, err = self.module.run_command(
                ["patch", "-p1", "--fuzz=0", "--batch", "--forward", "--no-backup-if-mismatch",
                 "-d", tree, "-i", patch_file],
                environ_update={"LC_ALL": "C"})
            output = (out + err).strip()
            self.patch_output.append("%s: %s" % (patch["name"], output.replace("\n", "; ")))
            if rc != 0:
                raise SourceError("%s does not apply to %s with no fuzz (patch exit status %d): %s"
                                  % (patch["name"], self.params["source"], rc, output))
            if "with fuzz" in output:
                raise SourceError("%s needed fuzz to apply to %s" % (patch["name"], self.params["source"]))
            if "(offset " in output and not self.params["allow_offset"]:
                raise SourceError("%s applies to %s only at an offset, so the series was not written for this exact "
                                  "source; run kernel-patch/check against it, review the result and set "
                                  "ppp_kmod_allow_offset: true to accept it" % (patch["name"], self.params["source"]))

        with open(os.path.join(tree, PATCHED_FILE)) as handle:
            return handle.read()

    def dkms_conf(self, version, sign_tool):
        lines = [
            "# Written by the l2tp.lac.ppp_kmod role, which overwrites changes.",
            'PACKAGE_NAME="%s"' % self.params["package_name"],
            'PACKAGE_VERSION="%s"' % version,
            'BUILT_MODULE_NAME[0]="ppp_generic"',
            'DEST_MODULE_LOCATION[0]="%s"' % self.params["dest_module_location"],
            "# The source is ppp_generic.c of one kernel series; DKMS builds it for",
            "# kernels of that series only.",
            'BUILD_EXCLUSIVE_KERNEL="%s"' % self.params["build_exclusive_kernel"],
            'AUTOINSTALL="yes"',
        ]
        if sign_tool:
            lines.append('SIGN_TOOL="%s"' % sign_tool)
        return "\n".join(lines) + "\n"

    def sign_script(self):
        argv = self.params["sign_command"]
        quoted = " ".join("'%s'" % part.replace("'", "'\\''") for part in argv)
        quoted = quoted.replace("{kernel}", "'\"$1\"'")
        return ("#!/bin/sh\n"
                "# DKMS runs this as SIGN_TOOL with the kernel release and the module file.\n"
                "# Written by the l2tp.lac.ppp_kmod role, which overwrites changes.\n"
                "exec %s \"$2\"\n" % quoted)

    def stage(self):
        paths = self.needed_paths()
        pristine, unpacked = self.pristine_tree(paths)
        if pristine is None:
            # Check mode with nothing cached: report the unpacking that would happen.
            return {"changed": True, "unpacked": True, "version": None, "path": None, "written": [],
                    "replaced": False}

        self.check_version(pristine)
        work = tempfile.mkdtemp(prefix="ppp-kmod-")
        try:
            patched = self.apply_patches(pristine, paths, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

        version = module_version(patched)
        if not version:
            raise SourceError("the patched %s has no MODULE_VERSION that can be read; DKMS needs one to tell the "
                              "build apart from the distribution's module (select the series' version patch)"
                              % PATCHED_FILE)
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]*$", version):
            raise SourceError("MODULE_VERSION %r cannot be a DKMS version" % version)

        path = os.path.join(self.params["src_root"], "%s-%s" % (self.params["package_name"], version))
        files = {"ppp_generic.c": patched, "Kbuild": self.params["kbuild"].rstrip("\n") + "\n"}
        sign_tool = None
        if self.params["sign_command"]:
            sign_tool = os.path.join(path, "sign-module")
            files["sign-module"] = self.sign_script()
        files["dkms.conf"] = self.dkms_conf(version, sign_tool)

        existed = os.path.isdir(path)
        written = [name for name in sorted(files) if read_or_none(os.path.join(path, name)) != files[name]]
        stale = []
        if existed:
            stale = [name for name in sorted(os.listdir(path)) if name not in files]
        if not self.module.check_mode:
            if not existed:
                os.makedirs(path, 0o755)
            for name in written:
                mode = 0o755 if name == "sign-module" else 0o644
                write_atomically(os.path.join(path, name), files[name], mode)
            for name in stale:
                target = os.path.join(path, name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                else:
                    os.remove(target)

        return {"changed": bool(written or stale), "unpacked": unpacked, "version": version, "path": path,
                "written": written + stale, "replaced": existed and bool(written or stale)}


def read_or_none(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def write_atomically(path, content, mode):
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    with os.fdopen(handle, "w") as out:
        out.write(content)
    os.chmod(temporary, mode)
    os.rename(temporary, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=dict(type="path", required=True),
            kernel_version=dict(type="str", required=True),
            cache_dir=dict(type="path", required=True),
            patches=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                content=dict(type="str", required=True),
            )),
            allow_offset=dict(type="bool", default=False),
            kbuild=dict(type="str", required=True),
            package_name=dict(type="str", required=True),
            src_root=dict(type="path", default="/usr/src"),
            build_exclusive_kernel=dict(type="str", required=True),
            dest_module_location=dict(type="str", default="/updates/dkms"),
            sign_command=dict(type="list", elements="str"),
        ),
        supports_check_mode=True,
    )
    if not module.params["patches"]:
        module.fail_json(msg="no patches given; the series folder holds no NNNN-*.patch file")

    stager = SourceStager(module)
    try:
        result = stager.stage()
    except SourceError as exc:
        stager.fail(str(exc))
    module.exit_json(patch_output=stager.patch_output, **result)


if __name__ == "__main__":
    main()
