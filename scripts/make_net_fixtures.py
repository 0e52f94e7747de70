"""Write tests/fixtures/authors_nets_astronaut.npz: inputs and the authors' network outputs.

Run once, in an environment that has facenet-pytorch 2.6.0 and torch (not a
dependency of this project; its weights are bit-identical to the authors'):

    pip install torch numpy opencv-python-headless requests tqdm pillow
    pip install --no-deps facenet-pytorch==2.6.0
    python scripts/make_net_fixtures.py

Inputs are cut from the bundled public-domain photo (mtcnn_jax/assets/astronaut.jpg)
plus uniform noise, so the fixture holds no third-party image data. Layouts follow
../shared/reference/nets/README.md: HWC uint8 inputs, fed as (x - 127.5) / 128;
softmax (non-face, face); regression (dx1, dy1, dx2, dy2); landmarks x1..x5, y1..y5.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# facenet_pytorch imports torchvision's NMS at import time; the networks do not need it.
_tv = types.ModuleType("torchvision")
_tv.ops = types.ModuleType("torchvision.ops")
_tv.ops.boxes = types.ModuleType("torchvision.ops.boxes")
_tv.ops.boxes.batched_nms = None
_tv.transforms = types.ModuleType("torchvision.transforms")
_tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
for name, mod in [("torchvision", _tv), ("torchvision.ops", _tv.ops), ("torchvision.ops.boxes", _tv.ops.boxes),
                  ("torchvision.transforms", _tv.transforms),
                  ("torchvision.transforms.functional", _tv.transforms.functional)]:
    sys.modules.setdefault(name, mod)

import torch  # noqa: E402
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet  # noqa: E402


def to_torch(x: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] → normalised float [N, 3, H, W]."""
    return torch.from_numpy((x.astype(np.float32) - 127.5) * 0.0078125).permute(0, 3, 1, 2)


def main() -> None:
    rng = np.random.default_rng(0)
    photo = cv2.cvtColor(cv2.imread(str(ROOT / "mtcnn_jax/assets/astronaut.jpg")), cv2.COLOR_BGR2RGB)
    # Regions (x1, y1, x2, y2) on the 512×512 photo: the face, parts of it, background.
    regions = [(175, 55, 270, 175), (190, 80, 260, 150), (150, 30, 300, 200), (0, 0, 120, 120),
               (300, 300, 500, 500), (200, 140, 250, 190), (100, 250, 180, 330), (160, 40, 290, 190)]
    crop = lambda r, s: cv2.resize(photo[r[1]:r[3], r[0]:r[2]], (s, s), interpolation=cv2.INTER_LINEAR)
    rnet_in = np.stack([crop(r, 24) for r in regions] + [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)])
    onet_in = np.stack([crop(r, 48) for r in regions] + [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)])
    pnet_in0 = cv2.resize(photo[40:200, 140:320], (83, 61), interpolation=cv2.INTER_AREA)  # 61×83, odd sides
    pnet_in1 = rng.integers(0, 256, (30, 24, 3), dtype=np.uint8)

    out = {"pnet_in0": pnet_in0, "pnet_in1": pnet_in1, "rnet_in": rnet_in, "onet_in": onet_in}
    pnet, rnet, onet = PNet().eval(), RNet().eval(), ONet().eval()
    with torch.no_grad():
        for i, x in enumerate([pnet_in0, pnet_in1]):
            reg, prob = pnet(to_torch(x[None]))
            out[f"pnet_prob{i}"] = prob[0].permute(1, 2, 0).numpy()
            out[f"pnet_reg{i}"] = reg[0].permute(1, 2, 0).numpy()
        reg, prob = rnet(to_torch(rnet_in))
        out["rnet_prob"], out["rnet_reg"] = prob.numpy(), reg.numpy()
        reg, lms, prob = onet(to_torch(onet_in))
        out["onet_prob"], out["onet_reg"], out["onet_landmarks"] = prob.numpy(), reg.numpy(), lms.numpy()
    path = ROOT / "tests/fixtures/authors_nets_astronaut.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    print(f"wrote {path}: " + ", ".join(f"{k} {v.shape}" for k, v in out.items()))


if __name__ == "__main__":
    main()
