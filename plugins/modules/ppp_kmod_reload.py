#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Ansible module l2tp.lac.ppp_kmod_reload: reload ppp_generic and the modules that depend on it.

Removes ppp_generic and every loaded module that depends on it, then loads
them again, so that each comes from the file modprobe picks now. When a
removal fails, the modules already removed are loaded again before the
module fails, so a failed run leaves the same modules loaded.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ppp_kmod_reload
version_added: 0.1.0
short_description: Reload ppp_generic and the modules that depend on it, for the ppp_kmod role
description:
  - Internal to the C(l2tp.lac.ppp_kmod) role, which is its only supported caller; its options may change.
  - Removes the loaded modules that depend on ppp_generic (holders first), then ppp_generic, with C(rmmod). Then
    loads ppp_generic and the removed modules with C(modprobe).
  - Loads ppp_generic alone when it was not loaded.
  - Ends every PPP session on the host. The role calls it only when nothing uses PPP or after draining.
options:
  depmod:
    description:
      - Run C(depmod -a) for the running kernel first, so that modprobe sees modules added or removed since the last
        run, for example after C(dkms remove).
    type: bool
    default: false
author:
  - l2tp.lac maintainers
"""

EXAMPLES = r"""
- name: Reload ppp_generic so that the module modprobe picks now is the one loaded
  l2tp.lac.ppp_kmod_reload:
  register: reloaded
  become: true
"""

RETURN = r"""
stage:
  description: On failure, V(depmod) when depmod failed (nothing was removed), V(remove) when rmmod failed (the
    removed modules were loaded again, so nothing changed), or V(load) when modprobe failed afterwards.
  returned: failure
  type: str
  sample: remove
removed:
  description: The modules removed, in the order of removal.
  returned: always
  type: list
  elements: str
  sample: ["l2tp_ppp", "pppoe", "pppox", "ppp_generic"]
loaded:
  description: The modules loaded afterwards, in the order given to modprobe.
  returned: success
  type: list
  elements: str
  sample: ["ppp_generic", "l2tp_ppp", "pppoe", "pppox"]
version:
  description: The MODULE_VERSION of the ppp_generic loaded now, or null when it has none.
  returned: success
  type: str
  sample: 2.4.2-l2tp-lac.1
srcversion:
  description:
    - The srcversion of the ppp_generic loaded now, or null when it has none.
    - Debian's in-tree modules without MODULE_VERSION have none, because its kernels are built without
      CONFIG_MODULE_SRCVERSION_ALL.
  returned: success
  type: str
  sample: 5993708439708F06D2E431A
file:
  description: The file that C(modinfo -n ppp_generic) names after the reload, which is the one just loaded.
  returned: success
  type: str
  sample: /lib/modules/5.10.0-32-amd64/updates/dkms/ppp_generic.ko
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.l2tp.lac.plugins.module_utils.ppp_kmod_modules import loaded_module, removal_order

MODULE = "ppp_generic"


def main():
    module = AnsibleModule(
        argument_spec=dict(depmod=dict(type="bool", default=False)),
        supports_check_mode=True,
    )
    environ = {"LC_ALL": "C"}

    order = removal_order(MODULE)
    to_load = [MODULE] + [name for name in order if name != MODULE]
    if module.check_mode:
        module.exit_json(changed=True, removed=order, loaded=to_load)

    if module.params["depmod"]:
        rc, out, err = module.run_command(["depmod", "-a", os.uname()[2]], environ_update=environ)
        if rc != 0:
            module.fail_json(msg="depmod -a %s failed: %s" % (os.uname()[2], (err or out).strip()),
                             stage="depmod", removed=[], loaded=[])

    removed = []
    for name in order:
        rc, out, err = module.run_command(["rmmod", name], environ_update=environ)
        if rc != 0:
            # Put back what this run removed, so the host keeps the modules it had.
            restore = [MODULE] + [done for done in removed if done != MODULE]
            module.run_command(["modprobe", "-a"] + restore, environ_update=environ)
            still_missing = [done for done in restore if not loaded_module(done)]
            module.fail_json(
                msg="rmmod %s failed: %s. The modules removed before it were loaded again%s; the running "
                    "ppp_generic is unchanged." % (name, (err or out).strip(),
                                                   " except %s" % ", ".join(still_missing) if still_missing else ""),
                stage="remove", removed=removed, loaded=restore)
        removed.append(name)

    rc, out, err = module.run_command(["modprobe", "-a"] + to_load, environ_update=environ)
    if rc != 0:
        module.fail_json(msg="modprobe -a %s failed: %s" % (" ".join(to_load), (err or out).strip()),
                         stage="load", removed=removed, loaded=[name for name in to_load if loaded_module(name)])

    state = loaded_module(MODULE) or {}
    rc, out, err = module.run_command(["modinfo", "-n", MODULE], environ_update=environ)
    module.exit_json(changed=True, removed=removed, loaded=to_load, file=out.strip() if rc == 0 else None,
                     version=state.get("version"), srcversion=state.get("srcversion"))


if __name__ == "__main__":
    main()
