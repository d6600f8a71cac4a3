"""``python -m mmcore`` is the ``mmcore`` command."""

from mmcore.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
