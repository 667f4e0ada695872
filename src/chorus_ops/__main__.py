"""``python -m chorus_ops``: the ``chorus`` command (spawned processes skip a ``__main__`` module,
so Dask's local workers started from it import nothing of the command line)."""

import os

from chorus_ops.launcher import main

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
