"""Run the ``>>>`` examples of memfn's docstrings (not part of the default pytest run).

python docs/check_examples.py            # every module of memfn
python docs/check_examples.py memfn.cell # some of them
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys

import torch

import memfn


def main(names: list[str]) -> int:
    names = names or ["memfn"] + [m.name for m in pkgutil.walk_packages(memfn.__path__, "memfn.")]
    failed = attempted = 0
    for name in names:
        torch.manual_seed(0)
        result = doctest.testmod(
            importlib.import_module(name),
            extraglobs={"torch": torch, "memfn": memfn},
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        )
        failed, attempted = failed + result.failed, attempted + result.attempted
    print(f"{attempted - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
