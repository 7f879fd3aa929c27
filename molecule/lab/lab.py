#!/usr/bin/env python3
"""Build, boot and tear down the Debian guests of the l2tp.lac VM lab.

The lab runs on the controller. Images are built from Debian packages only,
with mmdebstrap, and cached outside the repository under a key made from
their recipe. Guests boot under QEMU software emulation (TCG) with the
image's own kernel and initrd, a copy-on-write overlay each, user-mode
networking with SSH forwarded on 127.0.0.1 only, and the serial console in a
log file.

Usage:
  lab.py image SUITE [SUITE ...]      build or reuse the images, print their folders
  lab.py up NAME=SUITE [...] --json F start guests, wait for SSH, write their
                                      connection details to F
  lab.py down NAME [...] | --all      stop guests and remove their overlays
  lab.py status                       list the guests recorded in the cache
  lab.py inventory GUESTS_JSON GROUP  print an Ansible inventory (JSON) of guests
"""

import argparse
import concurrent.futures
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "images"

# Raise this when the build steps below change in a way the recipe files do
# not show, so that cached images are rebuilt.
BUILD_FORMAT = 1

# A mark on every QEMU command line this lab starts, so that `down --all`
# and a stale-guest sweep find them even when their run folder is gone. It
# names the cache too, so labs with different caches leave each other alone.
QEMU_TAG_PREFIX = "l2tp-lac-lab"

ROOTFS_SIZE = "6G"
GUEST_MEMORY_MB = int(os.environ.get("L2TP_LAC_LAB_MEMORY_MB", "2048"))
SSH_TIMEOUT = float(os.environ.get("L2TP_LAC_LAB_SSH_TIMEOUT", "300"))


class LabError(Exception):
    """A lab step failed; the message names the step and where its log is."""


def cache_dir():
    path = Path(os.environ.get("L2TP_LAC_LAB_CACHE", "/var/cache/l2tp-lac-lab"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def qemu_tag():
    digest = hashlib.sha256(str(cache_dir()).encode()).hexdigest()[:8]
    return f"{QEMU_TAG_PREFIX}-{digest}"


def log(message):
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(argv, step, log_path=None, **kwargs):
    """Run a command; on failure raise LabError naming the step and its log."""
    if log_path is None:
        result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
        if result.returncode != 0:
            raise LabError(
                f"{step} failed (exit {result.returncode}): {' '.join(map(str, argv))}\n"
                f"{result.stdout[-2000:]}{result.stderr[-4000:]}"
            )
        return result.stdout

    with open(log_path, "ab") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    if result.returncode != 0:
        raise LabError(f"{step} failed (exit {result.returncode}); its log is {log_path}")
    return ""


# ---------------------------------------------------------------- images


def lab_key():
    """Return the lab's SSH private key path, making the key pair once."""
    key = cache_dir() / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(mode=0o700, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", QEMU_TAG_PREFIX, "-f", str(key)],
            "making the lab's SSH key")
    return key


def debian_mirror():
    """Return the Debian archive URI this host's apt already uses.

    The lab takes its packages from the same registry as the host, so it
    works wherever the host's apt works. L2TP_LAC_LAB_MIRROR overrides it.
    """
    override = os.environ.get("L2TP_LAC_LAB_MIRROR")
    if override:
        return override

    candidates = []
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines()
                if ":" in line and not line.startswith("#")
            )
            suites = fields.get("Suites", "").split()
            if fields.get("Types", "").strip() == "deb" and any(
                    not s.endswith("-security") for s in suites):
                candidates.extend(fields.get("URIs", "").split())
    one_line = [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]
    for path in one_line:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and not match.group(2).endswith("-security"):
                candidates.append(match.group(1))

    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    raise LabError(
        "no Debian archive found in this host's apt sources; "
        "set L2TP_LAC_LAB_MIRROR to the archive URI"
    )


def recipe(suite):
    path = RECIPES / f"{suite}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
        raise LabError(f"no image recipe for suite {suite!r}; known suites: {known}")
    return tomllib.loads(path.read_text())


def image_key(suite):
    """Hash everything that decides an image's content."""
    digest = hashlib.sha256()
    digest.update(f"format {BUILD_FORMAT}\n".encode())
    digest.update((RECIPES / f"{suite}.toml").read_bytes())
    digest.update((RECIPES / "guest-setup.sh").read_bytes())
    digest.update(lab_key().with_suffix(".pub").read_bytes())
    return digest.hexdigest()[:16]


def image_dir(suite):
    return cache_dir() / "images" / f"{suite}-{image_key(suite)}"


# Written into the root before the kernel is installed, so that the kernel's
# own update-initramfs run already builds a small initrd (a few seconds
# instead of half a minute under MODULES=most).
INITRAMFS_HOOK = """#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
for module in virtio_pci virtio_blk virtio_net ext4; do
    manual_add_modules "$module"
done
"""


def build_image(suite):
    """Build the image for one suite unless a cached one has the same key."""
    target = image_dir(suite)
    if (target / "disk.qcow2").exists():
        log(f"{suite}: using cached image {target}")
        return target

    spec = recipe(suite)
    images = target.parent
    images.mkdir(parents=True, exist_ok=True)
    with open(images / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "disk.qcow2").exists():
            return target
        return _build_image_locked(suite, spec, target)


def _build_image_locked(suite, spec, target):
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".build-{suite}-", dir=target.parent))
    build_log = work / "build.log"
    rootfs = work / "rootfs"
    log(f"{suite}: building image with mmdebstrap (a minute or two); log: {build_log}")

    hook = work / "initramfs-hook"
    hook.write_text(INITRAMFS_HOOK)
    hook.chmod(0o755)
    packages = spec["packages"] + spec.get("kernel_build_packages", [])
    components = ",".join(spec.get("components", ["main"]))
    mirror = debian_mirror()
    argv = [
        "mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
        f"--components={components}",
        "--aptopt=Acquire::Check-Valid-Until \"false\"",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        f"--include={','.join(packages)}",
        "--essential-hook=mkdir -p \"$1/etc/initramfs-tools/conf.d\" \"$1/etc/initramfs-tools/hooks\"",
        "--essential-hook=echo MODULES=list > \"$1/etc/initramfs-tools/conf.d/l2tp-lac-lab\"",
        f"--essential-hook=upload {hook} /etc/initramfs-tools/hooks/l2tp-lac-lab",
        "--essential-hook=chmod 755 \"$1/etc/initramfs-tools/hooks/l2tp-lac-lab\"",
        f"--customize-hook=upload {RECIPES / 'guest-setup.sh'} /tmp/guest-setup.sh",
        f"--customize-hook=upload {lab_key().with_suffix('.pub')} /tmp/lab_key.pub",
        "--customize-hook=chroot \"$1\" sh /tmp/guest-setup.sh /tmp/lab_key.pub",
        "--customize-hook=rm -f \"$1/tmp/guest-setup.sh\" \"$1/tmp/lab_key.pub\"",
        spec["suite"], str(rootfs), f"deb {mirror} {spec['suite']} {components.replace(',', ' ')}",
    ]
    try:
        run(argv, f"building the {suite} image (mmdebstrap)", log_path=build_log)
        kernel_version = check_kernel_packages(suite, spec, rootfs)

        boot = work / "out"
        boot.mkdir()
        shutil.copy(rootfs / "boot" / f"vmlinuz-{kernel_version}", boot / "vmlinuz")
        shutil.copy(rootfs / "boot" / f"initrd.img-{kernel_version}", boot / "initrd.img")

        raw = work / "disk.raw"
        run(["mkfs.ext4", "-q", "-L", "root", "-d", str(rootfs), str(raw), ROOTFS_SIZE],
            f"making the {suite} root file system (mkfs.ext4)", log_path=build_log)
        run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(boot / "disk.qcow2")],
            f"converting the {suite} disk to qcow2", log_path=build_log)
        (boot / "image.json").write_text(json.dumps({
            "suite": suite, "kernel": kernel_version, "key": target.name,
            "build_seconds": round(time.monotonic() - started, 1),
        }, indent=2) + "\n")
        shutil.copy(build_log, boot / "build.log")
        boot.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # Older images of the same suite are dead weight once this one exists.
    for old in target.parent.glob(f"{suite}-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    log(f"{suite}: image ready in {time.monotonic() - started:.0f} s: {target}")
    return target


def check_kernel_packages(suite, spec, rootfs):
    """Return the guest's kernel release; fail if build packages mismatch it."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise LabError(f"{suite}: expected one kernel in the image, found {kernels}")
    release = kernels[0].name[len("vmlinuz-"):]
    if not spec.get("kernel_build_packages"):
        return release

    def version_of(package):
        return run(["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Version}", package],
                   f"{suite}: reading the version of {package}").strip()

    image_version = version_of(f"linux-image-{release}")
    headers_version = version_of(f"linux-headers-{release}")
    source_package = "linux-source-" + ".".join(release.split(".")[:2])
    source_version = version_of(source_package)
    if not image_version == headers_version == source_version:
        raise LabError(
            f"{suite}: kernel packages do not match: linux-image-{release} {image_version}, "
            f"linux-headers-{release} {headers_version}, {source_package} {source_version}"
        )
    return release


# ---------------------------------------------------------------- guests


def vm_dir(name):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise LabError(f"invalid guest name {name!r}: use letters, digits, '.', '_' and '-'")
    return cache_dir() / "vms" / name


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def qemu_pids(name=None):
    """Find QEMU processes this lab started, by the tag on their command line."""
    tag = qemu_tag()
    wanted = f"{tag}:{name}" if name else f"{tag}:"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and any(
                arg.decode(errors="replace").startswith(wanted) for arg in argv):
            if name is None or f"{tag}:{name}".encode() in argv:
                pids.append(int(entry.name))
    return pids


def stop_guest(name):
    for pid in qemu_pids(name):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)

    # Keep the last console log of each guest name: after a failed run it is
    # often the only record of what the guest's kernel printed.
    console = vm_dir(name) / "console.log"
    if console.exists():
        logs = cache_dir() / "logs"
        logs.mkdir(exist_ok=True)
        shutil.copy(console, logs / f"{name}.console.log")
    shutil.rmtree(vm_dir(name), ignore_errors=True)


def start_guest(name, suite, image):
    """Boot one guest of ``suite`` from the image folder ``image``; return its connection details."""
    stop_guest(name)
    folder = vm_dir(name)
    folder.mkdir(parents=True)
    overlay = folder / "overlay.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
         "-b", str(image / "disk.qcow2"), str(overlay)], f"{name}: making the disk overlay")

    port = free_port()
    console = folder / "console.log"
    argv = [
        "qemu-system-x86_64", "-name", f"{qemu_tag()}:{name}",
        "-accel", "tcg", "-smp", "2", "-m", str(GUEST_MEMORY_MB),
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
        # panic=-1 with -no-reboot makes a kernel panic end QEMU instead of
        # leaving a guest that never responds.
        "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1",
        "-no-reboot",
        "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe",
        "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-serial", f"file:{console}", "-display", "none", "-monitor", "none",
        "-daemonize", "-pidfile", str(folder / "qemu.pid"),
    ]
    run(argv, f"{name}: starting QEMU", log_path=folder / "qemu.log")
    details = {
        "instance": name, "suite": suite, "address": "127.0.0.1", "port": port,
        "user": "root", "identity_file": str(lab_key()), "console_log": str(console),
        "kernel": json.loads((image / "image.json").read_text())["kernel"],
    }
    (folder / "guest.json").write_text(json.dumps(details, indent=2) + "\n")
    log(f"{name}: booting {suite} on 127.0.0.1:{port}; console log: {console}")
    return details


def ssh_argv(details, *command):
    return [
        "ssh", "-i", details["identity_file"], "-p", str(details["port"]),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
        f"{details['user']}@{details['address']}", *command,
    ]


def wait_for_ssh(details):
    """Wait until the guest runs a command over SSH, or fail naming its console log."""
    name = details["instance"]
    started = time.monotonic()
    while time.monotonic() - started < SSH_TIMEOUT:
        if not qemu_pids(name):
            raise LabError(
                f"{name}: QEMU exited while booting; console log: {details['console_log']}\n"
                + tail(details["console_log"])
            )
        probe = subprocess.run(ssh_argv(details, "true"), capture_output=True, timeout=60)
        if probe.returncode == 0:
            log(f"{name}: SSH ready after {time.monotonic() - started:.0f} s")
            return
        time.sleep(2)
    raise LabError(
        f"{name}: SSH timed out after {SSH_TIMEOUT:.0f} s; console log: {details['console_log']}\n"
        + tail(details["console_log"])
    )


def tail(path, lines=15):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no console output)"
    return "\n".join(text[-lines:])


def guests_up(specs, json_path):
    """Start every guest, then wait for all of them in parallel."""
    images = {suite: build_image(suite) for suite in sorted({suite for _, suite in specs})}

    started = []
    try:
        for name, suite in specs:
            started.append(start_guest(name, suite, images[suite]))
        with concurrent.futures.ThreadPoolExecutor(len(started)) as pool:
            for future in [pool.submit(wait_for_ssh, d) for d in started]:
                future.result()
    except BaseException:
        for details in started:
            stop_guest(details["instance"])
        raise

    if json_path:
        Path(json_path).write_text(json.dumps(started, indent=2) + "\n")
    return started


def guests_down(names, everything):
    if everything:
        names = sorted({p.name for p in (cache_dir() / "vms").glob("*")})
        for pid in qemu_pids():
            os.kill(pid, signal.SIGKILL)
    for name in names:
        stop_guest(name)
        log(f"{name}: stopped")


def status():
    rows = []
    for folder in sorted((cache_dir() / "vms").glob("*")):
        info = folder / "guest.json"
        details = json.loads(info.read_text()) if info.exists() else {"instance": folder.name}
        details["running"] = bool(qemu_pids(folder.name))
        rows.append(details)
    print(json.dumps(rows, indent=2))


def inventory(guests_json, group):
    """Print an inventory that puts every guest of an `up` run in one group."""
    hosts = {}
    for details in json.loads(Path(guests_json).read_text()):
        hosts[details["instance"]] = {
            "ansible_host": details["address"],
            "ansible_port": details["port"],
            "ansible_user": details["user"],
            "ansible_ssh_private_key_file": details["identity_file"],
            "ansible_python_interpreter": "/usr/bin/python3",
            "lab_suite": details["suite"],
        }
    print(json.dumps({group: {"hosts": hosts}}, indent=2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    image = sub.add_parser("image", help="build or reuse images")
    image.add_argument("suites", nargs="+")
    up = sub.add_parser("up", help="start guests and wait for SSH")
    up.add_argument("guests", nargs="+", metavar="NAME=SUITE")
    up.add_argument("--json", help="write the guests' connection details here")
    down = sub.add_parser("down", help="stop guests")
    down.add_argument("names", nargs="*")
    down.add_argument("--all", action="store_true", help="every guest of this lab")
    sub.add_parser("status", help="list the guests recorded in the cache")
    listing = sub.add_parser("inventory", help="print an Ansible inventory of guests")
    listing.add_argument("guests_json", help="the file written by `up --json`")
    listing.add_argument("group", help="the inventory group to put them in")
    args = parser.parse_args(argv)

    try:
        if args.command == "image":
            for suite in args.suites:
                print(build_image(suite))
        elif args.command == "up":
            specs = []
            for item in args.guests:
                name, _, suite = item.partition("=")
                if not suite:
                    raise LabError(f"invalid guest {item!r}: write NAME=SUITE, e.g. lab1=bookworm")
                specs.append((name, suite))
            print(json.dumps(guests_up(specs, args.json), indent=2))
        elif args.command == "down":
            guests_down(args.names, args.all)
        elif args.command == "inventory":
            inventory(args.guests_json, args.group)
        else:
            status()
    except LabError as error:
        print(f"lab: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
