# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Loaded kernel modules as /sys/module shows them, for the ppp_kmod role's modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

SYS_MODULE = "/sys/module"


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def loaded_module(name):
    """Return refcnt, holders, version and srcversion of a loaded module, or None if it is not loaded."""
    base = os.path.join(SYS_MODULE, name)
    # Built-in modules can have a /sys/module entry too, but never a refcnt.
    refcnt = read_text(os.path.join(base, "refcnt"))
    if refcnt is None:
        return None
    holders_dir = os.path.join(base, "holders")
    return {
        "refcnt": int(refcnt),
        "holders": sorted(os.listdir(holders_dir)) if os.path.isdir(holders_dir) else [],
        "version": read_text(os.path.join(base, "version")),
        "srcversion": read_text(os.path.join(base, "srcversion")),
    }


def removal_order(name):
    """Return name's loaded dependents, direct or not, then name, each module after all that hold it.

    rmmod removes a module only when no loaded module holds it. Returns an
    empty list when name is not loaded.
    """
    if loaded_module(name) is None:
        return []

    held_by = {}
    pending = [name]
    while pending:
        current = pending.pop()
        state = loaded_module(current)
        held_by[current] = set(state["holders"]) if state else set()
        pending.extend(holder for holder in held_by[current] if holder not in held_by)

    order = []
    remaining = dict(held_by)
    while remaining:
        free = sorted(module for module, holders in remaining.items() if not holders & set(remaining))
        # Module dependencies form no cycle; the fallback only guards the loop.
        order.extend(free or sorted(remaining))
        for module in free or sorted(remaining):
            remaining.pop(module)
    return order
