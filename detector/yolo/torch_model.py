"""keras-yolo3's YOLOv3 and tiny YOLOv3 as a native PyTorch graph, built from the same TYOY weights files.

No TensorFlow: the legacy HDF5 file is read with h5py. Keras 2 names layers ``conv2d``, ``conv2d_1``, … in the
order they were created, which is keras-yolo3's code order (the file itself lists them by graph depth), so the
convolutions and batch norms are taken in suffix order and checked against the shapes the code order implies.
Every BatchNormalization (Keras' epsilon 1e-3) is folded into the convolution before it: inference is then
conv + bias + LeakyReLU(0.1) throughout.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import nn

from detector.yolo.files import ModelFileError
from detector.yolo.weights import scaled

BN_EPSILON = 1e-3  # Keras' BatchNormalization default, which keras-yolo3 keeps


@dataclass(frozen=True)
class ConvSpec:
    """One convolution of the code order: kernel size, channels in and out, stride, whether a BN follows."""

    k: int
    cin: int
    cout: int
    stride: int = 1
    bn: bool = True


def conv_plan(architecture: Literal["yolov3", "tiny"], num_classes: int, width: float = 1.0) -> list[ConvSpec]:
    """The convolutions of keras-yolo3's body in the order its code creates them (tiny at a width multiplier)."""
    out = 3 * (5 + num_classes)
    plan: list[ConvSpec] = []
    if architecture == "tiny":
        c16, c32, c64, c128, c256, c512, c1024 = (scaled(f, width) for f in (16, 32, 64, 128, 256, 512, 1024))
        chans = [3, c16, c32, c64, c128, c256, c512, c1024]
        plan += [ConvSpec(3, a, b) for a, b in itertools.pairwise(chans)]
        plan += [ConvSpec(1, c1024, c256), ConvSpec(3, c256, c512), ConvSpec(1, c512, out, bn=False)]
        plan += [ConvSpec(1, c256, c128), ConvSpec(3, c128 + c256, c256), ConvSpec(1, c256, out, bn=False)]
        return plan
    plan.append(ConvSpec(3, 3, 32))
    cin = 32
    for filters, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
        plan.append(ConvSpec(3, cin, filters, stride=2))
        for _ in range(blocks):
            plan += [ConvSpec(1, filters, filters // 2), ConvSpec(3, filters // 2, filters)]
        cin = filters
    for cin, filters in ((1024, 512), (768, 256), (384, 128)):
        plan += [
            ConvSpec(1, cin, filters),
            ConvSpec(3, filters, filters * 2),
            ConvSpec(1, filters * 2, filters),
            ConvSpec(3, filters, filters * 2),
            ConvSpec(1, filters * 2, filters),
            ConvSpec(3, filters, filters * 2),
            ConvSpec(1, filters * 2, out, bn=False),
        ]
        if filters > 128:
            plan.append(ConvSpec(1, filters, filters // 2))  # the 1x1 before the upsample to the next head
    return plan


def _suffix(name: str) -> int:
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else 0


def read_h5(path: Path, plan: list[ConvSpec]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight OIHW, bias) per convolution of ``plan``, BN folded in, from a TYOY weights or full-model file."""
    import h5py

    convs: list[tuple[int, list[np.ndarray]]] = []
    norms: list[tuple[int, list[np.ndarray]]] = []
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)
        for raw in root.attrs.get("layer_names", []):
            name = raw.decode() if isinstance(raw, bytes) else raw
            names = [n.decode() if isinstance(n, bytes) else n for n in root[name].attrs.get("weight_names", [])]
            arrays = [np.asarray(root[name][n], dtype=np.float32) for n in names]
            if not arrays:
                continue
            if arrays[0].ndim == 4:
                convs.append((_suffix(name), arrays))
            elif len(arrays) == 4:
                norms.append((_suffix(name), arrays))
    convs.sort(key=lambda c: c[0])
    norms.sort(key=lambda n: n[0])
    if len(convs) != len(plan) or len(norms) != sum(c.bn for c in plan):
        raise ModelFileError(
            path,
            f"holds {len(convs)} convolutions and {len(norms)} batch norms, the model needs {len(plan)} and "
            f"{sum(c.bn for c in plan)}",
            "give the weights this architecture was trained with",
        )
    bn_iter = iter(norms)
    out = []
    for spec, (_, arrays) in zip(plan, convs, strict=True):
        kernel = arrays[0]
        if kernel.shape != (spec.k, spec.k, spec.cin, spec.cout):
            raise ModelFileError(
                path,
                f"has a {kernel.shape} kernel where the model needs {(spec.k, spec.k, spec.cin, spec.cout)}",
                "check the classes and anchors files match the weights",
            )
        bias: np.ndarray = arrays[1] if len(arrays) > 1 else np.zeros(spec.cout, np.float32)
        weight: np.ndarray = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if spec.bn:
            gamma, beta, mean, var = next(bn_iter)[1]
            scale = gamma / np.sqrt(var + BN_EPSILON)
            weight = weight * scale[:, None, None, None]
            bias = beta - mean * scale
        out.append((np.ascontiguousarray(weight, np.float32), bias.astype(np.float32)))
    return out


def random_weights(plan: list[ConvSpec], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded, well-scaled weights (for smoke tests and benchmarks without a weights file).

    The output convolutions get a low objectness bias, as a trained detector has (most anchors see background):
    otherwise random heads put every anchor over the threshold and the box decoder, not the model, is measured.
    """
    rng = np.random.default_rng(seed)
    out = []
    for s in plan:
        weight = (rng.normal(0, 1, (s.cout, s.cin, s.k, s.k)) / np.sqrt(s.cin * s.k * s.k)).astype(np.float32)
        bias = rng.normal(0, 0.05, s.cout).astype(np.float32)
        if not s.bn:
            bias.reshape(3, -1)[:, 4] -= 6.0  # objectness of each of the 3 anchors
        out.append((weight, bias))
    return out


class _Conv(nn.Module):
    def __init__(self, spec: ConvSpec, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        # keras-yolo3's stride-2 convs pad one zero row/column at the top-left, then go "valid". On the even
        # sizes every stage sees (inputs are multiples of 32) a symmetric pad of one is the same: the extra
        # bottom/right row is never reached by a stride-2 window. So no separate pad (a copy) is needed.
        self.conv = nn.Conv2d(spec.cin, spec.cout, spec.k, spec.stride, spec.k // 2, bias=True)
        self.conv.weight.data = torch.from_numpy(weight)
        self.conv.bias.data = torch.from_numpy(bias)  # type: ignore[union-attr]
        self.leaky = spec.bn  # every conv followed by a BN is also followed by LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.leaky_relu(x, 0.1, inplace=True) if self.leaky else x


class YoloBody(nn.Module):
    """Outputs the raw heads, NCHW, strides 32, 16 (, 8) in keras-yolo3's order."""

    def __init__(
        self,
        architecture: Literal["yolov3", "tiny"],
        plan: list[ConvSpec],
        weights: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        super().__init__()
        self.architecture = architecture
        self.convs = nn.ModuleList(_Conv(s, w, b) for s, (w, b) in zip(plan, weights, strict=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layers: Iterator[nn.Module] = iter(self.convs)
        return self._tiny(x, layers) if self.architecture == "tiny" else self._yolov3(x, layers)

    @staticmethod
    def _yolov3(x: torch.Tensor, c: Iterator[nn.Module]) -> tuple[torch.Tensor, ...]:
        x = _run(c, x, 1)
        skips = []
        for blocks in (1, 2, 8, 8, 4):
            x = _run(c, x, 1)  # the stride-2 downsample
            for _ in range(blocks):
                x = x + _run(c, x, 2)
            skips.append(x)
        outs = []
        for i, skip in enumerate((None, skips[3], skips[2])):
            if skip is not None:
                x = torch.cat([x, skip], dim=1)
            x = _run(c, x, 5)
            outs.append(_run(c, x, 2))
            if i < 2:
                x = F.interpolate(_run(c, x, 1), scale_factor=2.0, mode="nearest")
        return tuple(outs)

    @staticmethod
    def _tiny(x: torch.Tensor, c: Iterator[nn.Module]) -> tuple[torch.Tensor, ...]:
        for i in range(5):
            x = _run(c, x, 1)
            if i < 4:
                x = F.max_pool2d(x, 2, 2)
        x1 = x
        x = _run(c, F.max_pool2d(x1, 2, 2), 1)
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, 1)  # Keras "same" pooling, stride 1
        x2 = _run(c, x, 2)
        y1 = _run(c, x2, 2)
        x = F.interpolate(_run(c, x2, 1), scale_factor=2.0, mode="nearest")
        y2 = _run(c, torch.cat([x, x1], dim=1), 2)
        return y1, y2


def _run(convs: Iterator[nn.Module], x: torch.Tensor, n: int) -> torch.Tensor:
    """Apply the next ``n`` convolutions of the code order, in that order."""
    for _ in range(n):
        x = next(convs)(x)
    return x


def build_torch_body(
    architecture: Literal["yolov3", "tiny"], num_classes: int, weights: Path | None, seed: int = 0, width: float = 1.0
) -> YoloBody:
    plan = conv_plan(architecture, num_classes, width)
    params = read_h5(weights, plan) if weights is not None else random_weights(plan, seed)
    return YoloBody(architecture, plan, params).eval()
