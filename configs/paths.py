"""Where the shipped configs find the data (not a config: no ``get_config``).

``$MTCNN_JAX_DATA`` when set, else ``shared/data`` beside this checkout
(``<checkout>/../shared/data``, the layout of the development machines and of
the tests; Colab: ``/content/shared/data``). The library itself knows no
layout: its schema's ``data.root`` is just ``$MTCNN_JAX_DATA``.

The configs load this file by its path::

    paths = config_utils.load_module(Path(__file__).with_name("paths.py"))
    c.data.root = paths.data_root()
"""

import os
from pathlib import Path

#: The folder beside the checkout that holds the shared data.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_root() -> str:
    """``$MTCNN_JAX_DATA``, else :data:`SHARED_DATA`."""
    return os.environ.get("MTCNN_JAX_DATA") or str(SHARED_DATA)
