#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Ansible module l2tp.lac.ppp_kmod_host_info: the host state the ppp_kmod role decides on.

Reads the running kernel, the loaded and installed ppp_generic, the build
tools, the kernel source, Secure Boot, DKMS and the live users of PPP in one
pass, because every remote task costs seconds on a slow host. Changes
nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ppp_kmod_host_info
version_added: 0.1.0
short_description: Read the kernel, ppp_generic, DKMS and PPP user state for the ppp_kmod role
description:
  - Internal to the C(l2tp.lac.ppp_kmod) role, which is its only supported caller; its options may change. Reads state only, so it runs the same in check mode.
options:
  dkms_name:
    description: The DKMS package name whose registered versions to list.
    type: str
    required: true
  source_package:
    description: The Debian package with the kernel source, for example C(linux-source-5.10).
    type: str
  source_path:
    description: A kernel source tarball or unpacked tree to check for, instead of the package.
    type: path
  signing_key:
    description: The private key file that signs the module, to check for.
    type: path
  signing_cert:
    description: The certificate file that goes with O(signing_key), to check for.
    type: path
author:
  - l2tp.lac maintainers
"""

EXAMPLES = r"""
- name: Read the state the ppp_kmod role decides on
  l2tp.lac.ppp_kmod_host_info:
    dkms_name: ppp-generic-l2tp-lac
    source_package: linux-source-5.10
  register: kmod_host
  become: true

- name: Show who uses PPP
  ansible.builtin.debug:
    var: kmod_host.users
"""

RETURN = r"""
kernel:
  description: The running kernel release, its VERSION.PATCHLEVEL, the Debian package that ships its ppp_generic
    module, and that package's version.
  returned: always
  type: dict
  sample: {"release": "5.10.0-32-amd64", "series": "5.10", "package": "linux-image-5.10.0-32-amd64",
           "package_version": "5.10.223-1", "upstream_version": "5.10.223"}
os:
  description: ID and VERSION_ID from /etc/os-release, and the major version.
  returned: always
  type: dict
  sample: {"id": "debian", "version_id": "11", "major": "11"}
ppp_generic:
  description:
    - The loaded module, the file that modprobe would load now, the distribution's file, and the loaded modules
      that depend on ppp_generic in the order they must be removed.
    - A srcversion is null for a module without MODULE_VERSION in a kernel built without
      CONFIG_MODULE_SRCVERSION_ALL, such as Debian's in-tree ppp_generic.
  returned: always
  type: dict
  sample: {"builtin": false, "loaded": true, "loaded_version": null, "loaded_srcversion": null,
           "file": "/lib/modules/5.10.0-32-amd64/kernel/drivers/net/ppp/ppp_generic.ko", "file_version": null,
           "file_srcversion": null,
           "distro_file": "/lib/modules/5.10.0-32-amd64/kernel/drivers/net/ppp/ppp_generic.ko",
           "distro_version": null, "distro_srcversion": null, "dependents": ["l2tp_ppp", "pppoe", "pppox"]}
headers:
  description: The kernel build directory for the running kernel and whether it has a Makefile.
  returned: always
  type: dict
  sample: {"path": "/lib/modules/5.10.0-32-amd64/build", "present": true}
secure_boot:
  description: Whether Secure Boot is on (null when unknown) and where that was read.
  returned: always
  type: dict
  sample: {"enabled": false, "source": "the system did not boot through EFI (no /sys/firmware/efi)"}
tools:
  description: The path of each tool the build needs, or null when it is missing.
  returned: always
  type: dict
  sample: {"dkms": "/usr/sbin/dkms", "patch": "/usr/bin/patch", "make": "/usr/bin/make", "gcc": "/usr/bin/gcc",
           "tar": "/bin/tar", "xz": "/usr/bin/xz", "depmod": "/sbin/depmod", "modprobe": "/sbin/modprobe",
           "rmmod": "/sbin/rmmod"}
source:
  description: The installed version of O(source_package) (null if not installed), its tarball, and whether
    O(source_path) exists and is a file or a directory.
  returned: always
  type: dict
  sample: {"package": "linux-source-5.10", "package_version": "5.10.223-1",
           "package_tarball": "/usr/src/linux-source-5.10.tar.xz", "path": null, "path_kind": null}
signing:
  description: Whether O(signing_key) and O(signing_cert) exist, and the kernel's sign-file program.
  returned: always
  type: dict
  sample: {"key_exists": false, "cert_exists": false, "sign_file": "/lib/modules/5.10.0-32-amd64/build/scripts/sign-file"}
dkms:
  description: The versions of O(dkms_name) that DKMS knows, with kernel, architecture and state, one entry per
    line of C(dkms status).
  returned: always
  type: list
  elements: dict
  sample: [{"version": "2.4.2-l2tp-lac.1", "kernel": "5.10.0-32-amd64", "arch": "x86_64", "state": "installed"}]
users:
  description:
    - What holds ppp_generic and the modules that depend on it. RV(users.count) is the sum of module references
      that no other module explains. It is 0 when nothing but module dependencies holds them, so no PPP socket,
      /dev/ppp file, PPP tty line discipline or PPP compressor is in use.
    - RV(users.sessions) lists the lines of /proc/net/pppoe and /proc/net/pppol2tp of every network namespace
      that a process is in, so sessions in namespaces without a process are not listed, but still counted.
    - RV(users.summary) says the same in one sentence.
  returned: always
  type: dict
  sample: {"count": 3, "references": {"pppoe": 2, "l2tp_ppp": 1}, "ppp_device_holders": [{"pid": 812, "command": "pppd"}],
           "sessions": [{"netns": 4026532281, "kind": "pppoe", "line": "00000001 02:00:00:00:01:01 lac-cpe"}],
           "summary": "3 module references beyond module dependencies (l2tp_ppp 1, pppoe 2); 1 sockets listed in
             /proc/net/pppoe and /proc/net/pppol2tp; /dev/ppp open in pppd (pid 812)"}
"""

import glob
import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.l2tp.lac.plugins.module_utils.ppp_kmod_modules import loaded_module, read_text, removal_order

MODULE = "ppp_generic"
EFI_DIR = "/sys/firmware/efi"
# The EFI global variable GUID; the variable's first 4 bytes are attributes.
SECURE_BOOT_VARIABLE = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
TOOLS = ("dkms", "patch", "make", "gcc", "tar", "xz", "depmod", "modprobe", "rmmod")


def read_os_release():
    fields = {}
    text = read_text("/etc/os-release") or ""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    version_id = fields.get("VERSION_ID", "")
    return {"id": fields.get("ID", ""), "version_id": version_id, "major": version_id.split(".")[0]}


def is_builtin(release, name):
    path = "/lib/modules/%s/modules.builtin" % release
    text = read_text(path) or ""
    suffix = "/%s.ko" % name
    return any(line.endswith(suffix) for line in text.splitlines())


class HostReader:
    def __init__(self, module):
        self.module = module
        self.release = os.uname()[2]

    def run(self, argv):
        """Run a command; return its stripped stdout, or None if it failed."""
        rc, out, _err = self.module.run_command(argv, environ_update={"LC_ALL": "C"})
        return out.strip() if rc == 0 else None

    def modinfo(self, field, target):
        value = self.run(["modinfo", "-k", self.release, "-F", field, target])
        return value or None

    def package_of(self, path):
        if not self.module.get_bin_path("dpkg-query") or not os.path.exists(path):
            return None, None
        owner = self.run(["dpkg-query", "-S", path])
        if not owner:
            return None, None
        package = owner.splitlines()[0].split(":")[0].strip()
        return package, self.package_version(package)

    def package_version(self, package):
        if not package or not self.module.get_bin_path("dpkg-query"):
            return None
        status = self.run(["dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", package])
        if not status or not status.startswith("installed "):
            return None
        return status.split(" ", 1)[1]

    def kernel(self):
        series = ".".join(self.release.split(".")[:2])
        distro_file = self.distro_file()
        package, version = self.package_of(distro_file) if distro_file else (None, None)
        # Debian versions read UPSTREAM-REVISION, e.g. 5.10.223-1 is 5.10.223.
        upstream = version.split("-")[0].split("+")[0] if version else None
        if upstream is None:
            # Debian also writes it into the version string: "#1 SMP Debian 5.10.223-1 (2024-08-10)".
            match = re.search(r"Debian (\d+\.\d+\.\d+)-", os.uname()[3])
            upstream = match.group(1) if match else None
        return {"release": self.release, "series": series, "package": package,
                "package_version": version, "upstream_version": upstream}

    def distro_file(self):
        candidates = glob.glob("/lib/modules/%s/kernel/drivers/net/ppp/%s.ko*" % (self.release, MODULE))
        return sorted(candidates)[0] if candidates else None

    def ppp_generic(self):
        state = loaded_module(MODULE)
        distro_file = self.distro_file()
        module_file = self.run(["modinfo", "-k", self.release, "-n", MODULE])
        return {
            "builtin": is_builtin(self.release, MODULE),
            "loaded": state is not None,
            "loaded_version": state["version"] if state else None,
            "loaded_srcversion": state["srcversion"] if state else None,
            "file": module_file or None,
            "file_version": self.modinfo("version", module_file) if module_file else None,
            "file_srcversion": self.modinfo("srcversion", module_file) if module_file else None,
            "distro_file": distro_file,
            "distro_version": self.modinfo("version", distro_file) if distro_file else None,
            "distro_srcversion": self.modinfo("srcversion", distro_file) if distro_file else None,
            "dependents": [name for name in removal_order(MODULE) if name != MODULE],
        }

    def secure_boot(self):
        if not os.path.isdir(EFI_DIR):
            return {"enabled": False, "source": "the system did not boot through EFI (no %s)" % EFI_DIR}
        try:
            with open(SECURE_BOOT_VARIABLE, "rb") as handle:
                raw = handle.read()
            if len(raw) >= 5:
                return {"enabled": raw[4] == 1, "source": SECURE_BOOT_VARIABLE}
        except (IOError, OSError):
            pass
        if self.module.get_bin_path("mokutil"):
            rc, out, err = self.module.run_command(["mokutil", "--sb-state"], environ_update={"LC_ALL": "C"})
            text = (out + err).lower()
            if "secureboot enabled" in text:
                return {"enabled": True, "source": "mokutil --sb-state"}
            if "secureboot disabled" in text:
                return {"enabled": False, "source": "mokutil --sb-state"}
        return {"enabled": None, "source": "neither %s nor mokutil --sb-state gave the state" % SECURE_BOOT_VARIABLE}

    def source(self, package, path):
        result = {"package": package, "package_version": self.package_version(package),
                  "package_tarball": None, "path": path, "path_kind": None}
        if package:
            tarballs = sorted(glob.glob("/usr/src/%s.tar.*" % package))
            result["package_tarball"] = tarballs[0] if tarballs else None
        if path:
            if os.path.isdir(path):
                result["path_kind"] = "tree"
            elif os.path.isfile(path):
                result["path_kind"] = "tarball"
        return result

    def signing(self, key, cert):
        sign_file = "/lib/modules/%s/build/scripts/sign-file" % self.release
        return {
            "key_exists": bool(key) and os.path.isfile(key),
            "cert_exists": bool(cert) and os.path.isfile(cert),
            "sign_file": sign_file if os.access(sign_file, os.X_OK) else None,
        }

    def dkms(self, name):
        if not self.module.get_bin_path("dkms"):
            return []
        output = self.run(["dkms", "status", "-m", name]) or ""
        return parse_dkms_status(output, name)

    def users(self, dependents):
        references = {}
        for name in [MODULE] + list(dependents):
            state = loaded_module(name)
            if state is None:
                continue
            # Every module that uses a symbol of this one holds one reference.
            extra = state["refcnt"] - len(state["holders"])
            if extra > 0:
                references[name] = extra
        holders, sessions = scan_processes()
        count = sum(references.values())
        return {"count": count, "references": references, "ppp_device_holders": holders, "sessions": sessions,
                "summary": describe_users(count, references, holders, sessions)}


def describe_users(count, references, holders, sessions):
    """Return one sentence on what uses PPP, for messages."""
    if not count:
        return "nothing uses PPP"
    parts = ["%d module references beyond module dependencies (%s)"
             % (count, ", ".join("%s %d" % item for item in sorted(references.items())))]
    if sessions:
        parts.append("%d sockets listed in /proc/net/pppoe and /proc/net/pppol2tp" % len(sessions))
    if holders:
        parts.append("/dev/ppp open in %s" % ", ".join("%s (pid %d)" % (holder["command"], holder["pid"])
                                                         for holder in holders))
    return "; ".join(parts)


def parse_dkms_status(output, name):
    """Parse `dkms status` lines of DKMS 2.x ("name, version, kernel, arch: state")
    and 3.x ("name/version, kernel, arch: state")."""
    entries = []
    for line in output.splitlines():
        head, sep, state = line.rpartition(":")
        if not sep:
            continue
        fields = [field.strip() for field in head.replace("/", ", ", 1).split(",")]
        if len(fields) < 2 or fields[0] != name:
            continue
        entries.append({
            "version": fields[1],
            "kernel": fields[2] if len(fields) > 2 else None,
            "arch": fields[3] if len(fields) > 3 else None,
            "state": state.strip().split()[0] if state.strip() else "",
        })
    return entries


def scan_processes():
    """Find processes holding /dev/ppp, and the PPPoX sessions of every process's namespace."""
    holders = []
    sessions = []
    seen_netns = set()
    for proc in sorted(glob.glob("/proc/[0-9]*"), key=lambda path: int(path.rsplit("/", 1)[1])):
        pid = int(proc.rsplit("/", 1)[1])
        try:
            targets = [os.readlink(fd) for fd in glob.glob(proc + "/fd/*")]
        except OSError:
            continue
        if "/dev/ppp" in targets:
            holders.append({"pid": pid, "command": read_text(proc + "/comm")})

        try:
            netns = os.stat(proc + "/ns/net").st_ino
        except OSError:
            continue
        if netns in seen_netns:
            continue
        seen_netns.add(netns)
        for kind, name in (("pppoe", "pppoe"), ("l2tp", "pppol2tp")):
            text = read_text("%s/net/%s" % (proc, name)) or ""
            # The first line is a header. /proc/net/pppol2tp lists tunnels and
            # sessions in blocks; keep the session lines only.
            for line in text.splitlines()[1:]:
                if kind == "l2tp" and not line.strip().startswith("SESSION '"):
                    continue
                if line.strip():
                    sessions.append({"netns": netns, "kind": kind, "line": line.strip()})
    return holders, sessions


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dkms_name=dict(type="str", required=True),
            source_package=dict(type="str"),
            source_path=dict(type="path"),
            signing_key=dict(type="path"),
            signing_cert=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    reader = HostReader(module)

    ppp_generic = reader.ppp_generic()
    module.exit_json(
        changed=False,
        kernel=reader.kernel(),
        os=read_os_release(),
        ppp_generic=ppp_generic,
        headers={"path": "/lib/modules/%s/build" % reader.release,
                 "present": os.path.isfile("/lib/modules/%s/build/Makefile" % reader.release)},
        secure_boot=reader.secure_boot(),
        tools=dict((tool, module.get_bin_path(tool)) for tool in TOOLS),
        source=reader.source(params["source_package"], params["source_path"]),
        signing=reader.signing(params["signing_key"], params["signing_cert"]),
        dkms=reader.dkms(params["dkms_name"]),
        users=reader.users(ppp_generic["dependents"]),
    )


if __name__ == "__main__":
    main()
