"""mtcnn_jax: MTCNN (Zhang et al., IEEE SPL 2016) in JAX/Flax.

Detection with the authors' weights::

    import mtcnn_jax
    image = mtcnn_jax.load_image("photo.jpg")          # uint8[H, W, 3] RGB
    faces = mtcnn_jax.MTCNN().detect(image)            # boxes [N, 4], scores [N], landmarks [N, 5, 2]
    crops = mtcnn_jax.align(image, faces.landmarks)    # uint8[N, 112, 112, 3]
"""

__version__ = "0.1.0"

from mtcnn_jax.align import align
from mtcnn_jax.detector import MTCNN, detect
from mtcnn_jax.faces import Faces
from mtcnn_jax.images import load_image
from mtcnn_jax.pretrained import load_pretrained

__all__ = ["MTCNN", "Faces", "detect", "align", "load_image", "load_pretrained", "__version__"]
