"""``python -m mtcnn_jax ...``: the ``mtcnn-jax`` command line."""

import sys

from mtcnn_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
