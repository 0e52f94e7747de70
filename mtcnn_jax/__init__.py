"""mtcnn_jax: MTCNN (Zhang et al., IEEE SPL 2016) in JAX/Flax.

Detection with the authors' weights::

    import mtcnn_jax
    image = mtcnn_jax.load_image("photo.jpg")          # uint8[H, W, 3] RGB
    faces = mtcnn_jax.MTCNN().detect(image)            # boxes [N, 4], scores [N], landmarks [N, 5, 2]
    crops = mtcnn_jax.align(image, faces.landmarks)    # uint8[N, 112, 112, 3]

The detector's names load their modules on first use (JAX loads then, not at
``import mtcnn_jax``), so ``mtcnn-jax --version`` and ``--help`` start at once.
``align`` is imported here: its module has the same name, and importing that
module (as any ``from mtcnn_jax.align import ...`` does) would otherwise leave
``mtcnn_jax.align`` naming the module instead of the function.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: The version: the one place it is written (pyproject.toml reads it from here).
__version__ = "0.1.0"

from mtcnn_jax.align import align

if TYPE_CHECKING:
    from mtcnn_jax.detector import MTCNN, detect
    from mtcnn_jax.faces import Faces
    from mtcnn_jax.images import load_image
    from mtcnn_jax.pretrained import load_pretrained

#: Public name → the module that defines it.
_EXPORTS = {
    "MTCNN": "mtcnn_jax.detector",
    "detect": "mtcnn_jax.detector",
    "Faces": "mtcnn_jax.faces",
    "load_image": "mtcnn_jax.images",
    "load_pretrained": "mtcnn_jax.pretrained",
}

__all__ = ["MTCNN", "Faces", "detect", "align", "load_image", "load_pretrained", "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name.startswith("_"):
            raise AttributeError(f"module 'mtcnn_jax' has no attribute {name!r}")
        # mtcnn_jax.detector etc.: submodules load on first use too
        try:
            return importlib.import_module(f"mtcnn_jax.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"mtcnn_jax.{name}":
                raise
        raise AttributeError(f"module 'mtcnn_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
