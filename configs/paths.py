"""Where the shipped configs find the data (not a config: no ``get_config``).

``$MTCNN_JAX_DATA`` when set, else ``shared/data`` beside this checkout
(``<checkout>/../shared/data``, the layout of the development machines and of
the tests; Colab: ``/content/shared/data``). The library itself knows no
layout: its schema's ``data.root`` is just ``$MTCNN_JAX_DATA``.

Installed from a wheel, these files are ``mtcnn_jax/configs/`` inside the
package: there is no checkout, and the data root is ``$MTCNN_JAX_DATA`` only
(empty when unset: set it, or ``--config.data.root=DIR``).

The configs load this file by its path::

    paths = config_utils.load_module(Path(__file__).with_name("paths.py"))
    c.data.root = paths.data_root()
"""

import os
from pathlib import Path
from typing import Optional

_HERE = Path(__file__).resolve().parent
#: True when these configs are the copy inside an installed package (mtcnn_jax/configs/).
INSTALLED = _HERE.parent.name == "mtcnn_jax"
#: The folder beside the checkout that holds the shared data (None in an installed package).
SHARED_DATA: Optional[Path] = None if INSTALLED else _HERE.parent.parent / "shared" / "data"


def data_root() -> str:
    """``$MTCNN_JAX_DATA``, else :data:`SHARED_DATA` (else empty)."""
    return os.environ.get("MTCNN_JAX_DATA") or (str(SHARED_DATA) if SHARED_DATA is not None else "")
