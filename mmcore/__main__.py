"""``python -m mmcore`` is the ``mmcore`` command.

``python -m`` puts the current folder first on ``sys.path``; the console script does not. Left
there, it would make entry-point discovery read any ``*.dist-info`` in the working folder (and run
the plugin code it names), and in mmcore's own source tree make the folder ``kernels/`` shadow
PyPI's ``kernels`` package. So the working folder is taken off the path before anything else is
imported: ``python -m mmcore`` finds exactly the plugins ``mmcore`` finds. Only the entry ``-m``
added (the first) goes: the same folder named on purpose in ``PYTHONPATH`` stays.
"""

import os
import sys

if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath(os.getcwd()):
    del sys.path[0]

from mmcore.cli import main  # noqa: E402  (after the path is cleaned)

if __name__ == "__main__":
    raise SystemExit(main())
