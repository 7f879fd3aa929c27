"""Make the collection importable as ansible_collections.l2tp.lac.

The plugins import each other by their collection path. When the checkout
does not already sit at .../ansible_collections/l2tp/lac (ansible-test puts
it there), a temporary tree with that layout is created and put first on
sys.path, with a symlink to the checkout as ``lac``.
"""

import atexit
import os
import shutil
import sys
import tempfile

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _already_in_layout():
    parts = COLLECTION_ROOT.split(os.sep)
    return parts[-3:] == ["ansible_collections", "l2tp", "lac"]


def _add_collection_to_path():
    if _already_in_layout():
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT))))
        return

    tree = tempfile.mkdtemp(prefix="l2tp-lac-tests-")
    atexit.register(shutil.rmtree, tree, True)
    namespace_dir = os.path.join(tree, "ansible_collections", "l2tp")
    os.makedirs(namespace_dir)
    os.symlink(COLLECTION_ROOT, os.path.join(namespace_dir, "lac"))
    sys.path.insert(0, tree)


_add_collection_to_path()
