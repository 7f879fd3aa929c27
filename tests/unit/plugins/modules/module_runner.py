"""Run a module's main() in-process and catch what it would print as its result."""

from unittest import mock

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleExit(Exception):
    """Raised in place of exit_json/fail_json, carrying the module's result."""

    def __init__(self, result, failed):
        super(ModuleExit, self).__init__(result.get("msg"))
        self.result = result
        self.failed = failed


def _exit_json(module, **result):
    raise ModuleExit(result, failed=False)


def _fail_json(module, msg, **result):
    result["msg"] = msg
    raise ModuleExit(result, failed=True)


def run_main(main, args, check_mode=False, diff=False):
    """Call main() with the module arguments ``args``; return the ModuleExit it ends with."""
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "exit_json", _exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", _fail_json):
        try:
            main()
        except ModuleExit as exit_:
            return exit_
    raise AssertionError("main() returned without calling exit_json or fail_json")
