"""The paper's nets: FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once on VGG16.

These are the reference nets of Long, Shelhamer and Darrell exactly as the authors' Caffe
models (``voc-fcn32s`` ... ``voc-fcn8s-atonce``) and their PyTorch port pytorch-fcn lay them
out, so that pytorch-fcn's ``fcn32s_from_caffe.pth`` ... ``fcn8s-atonce_from_caffe.pth`` load
with a strict state-dict load and reproduce the original outputs:

* VGG16 with ``conv1_1`` padded by 100 and max pools that round up (``ceil_mode``, Caffe's
  pooling arithmetic). The large padding makes the net accept any input from 1x1 up: the
  stride-32 map is never empty, and the crops below always find enough pixels.
* ``fc6`` as a 7x7 convolution to 4096 channels and ``fc7`` as a 1x1 one, each followed by
  ReLU and dropout (``Dropout2d``, as pytorch-fcn).
* 1x1 scorers ``score_fr``, ``score_pool4``, ``score_pool3``, zero-initialised (training
  starts from "predict nothing" and the skips start silent).
* Bias-free transposed convolutions initialised to bilinear upsampling, without padding
  (Caffe's ``Deconvolution``): ``upscore`` 64/32 (32s); ``upscore2`` 4/2 then ``upscore16``
  32/16 (16s); ``upscore2``, ``upscore_pool4`` 4/2 then ``upscore8`` 16/8 (8s). Their
  weights are dense ``C x C x k x k`` (diagonal), the reference layout; for deployment
  :func:`~fcn_deploy.models.upsampling.convert_upsampling_to_grouped` swaps in the grouped
  form with identical outputs.
* Crops (Caffe's ``Crop`` layers) that align each map with the next: offset 19 (32s);
  5 and 27 (16s); 5, 9 and 31 (8s).
* FCN-8s at-once (the paper's "all-at-once" training) scales pool4 by 0.01 and pool3 by
  0.0001 before scoring them, so that the skips start small when all layers train together.

Upsampling: the paper (section 4.3, "Upsampling") learns the intermediate 2x layers from a
bilinear start and fixes the final stride-32/16/8 layers to bilinear interpolation; the
reference Caffe models froze all of them. ``learnable_upsampling=True`` (default) is the
paper's choice, ``False`` the reference code's. Frozen layers keep their weights in the state
dict (so files load strictly) with ``requires_grad=False``.

Input normalisation follows the weights: Caffe-converted files (pytorch-fcn's) expect BGR
0..255 minus the ImageNet mean (:data:`CAFFE_VGG`, the default); torchvision's ImageNet VGG16
expects RGB scaled by ImageNet mean/std, so loading it switches ``model.normalization`` to
:data:`TORCHVISION_IMAGENET`.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Set, Tuple

import torch
import torch.nn as nn

from ..errors import FcnDeployError
from ..normalization import CAFFE_VGG, TORCHVISION_IMAGENET, Normalization
from .pretrained import load_pretrained
from .staged import STRIDE
from .upsampling import bilinear_deconv

log = logging.getLogger(__name__)

IMAGENET_WEIGHTS = "vgg16-imagenet"  # torchvision's file; see fcn_deploy.models.weight_files

# VGG16's five blocks of 3x3 convolutions (configuration "D" of Simonyan and Zisserman).
VGG16_BLOCKS: Tuple[Tuple[int, ...], ...] = (
    (64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC_CHANNELS = 4096

# torchvision's ``vgg16().features`` index of each convolution, in order conv1_1 ... conv5_3.
TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# torchvision's ``vgg16().classifier`` Linear layers that become fc6 and fc7 (6 is the
# 1000-class ImageNet scorer, which has no place in an FCN).
TORCHVISION_FC_INDEX = {"fc6": 0, "fc7": 3}

# The final upsampler of each variant, which a finer net does not have.
FINAL_UPSCORE = {"32s": "upscore", "16s": "upscore16", "8s": "upscore8"}


def conv_names() -> List[str]:
    """``conv1_1`` ... ``conv5_3``: the VGG16 convolutions in order."""
    return [f"conv{b}_{i}" for b, block in enumerate(VGG16_BLOCKS, 1) for i in range(1, len(block) + 1)]


def crop_like(x: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """Caffe's ``Crop``: ``x[offset : offset + H, offset : offset + W]`` with ``like``'s H, W."""
    return x[:, :, offset:offset + like.shape[2], offset:offset + like.shape[3]]


class VGG16FCN(nn.Module):
    """The VGG16 trunk (``conv1_1`` ... ``fc7``) and ``score_fr`` shared by all variants.

    Modules are top-level attributes with the paper's names, so the state-dict keys are
    exactly pytorch-fcn's. ``width`` divides every channel count (1 = the real net; 16 gives
    4..32 conv channels and a 256-wide fc6/fc7 for fast tests); the names do not change.
    Each subclass declares its ``variant``, which staged training reads
    (:func:`~fcn_deploy.models.staged.init_from_coarser`).
    """

    variant = ""
    normalization: Normalization = CAFFE_VGG

    def __init__(self, num_classes: int, learnable_upsampling: bool = True, width: int = 1) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise FcnDeployError(f"width must be a whole channel divisor >= 1, not {width!r}")
        self.num_classes = num_classes
        self.width = width
        self.learnable_upsampling = learnable_upsampling
        self.normalization = CAFFE_VGG
        self._trunk_names: List[str] = []
        cin = 3
        for b, block in enumerate(VGG16_BLOCKS, 1):
            for i, c in enumerate(block, 1):
                cout = max(1, c // width)
                # conv1_1's padding of 100 is what lets any input size through (module doc).
                self._add(f"conv{b}_{i}", nn.Conv2d(cin, cout, 3, padding=100 if (b, i) == (1, 1) else 1))
                self._add(f"relu{b}_{i}", nn.ReLU(inplace=True))
                cin = cout
            self._add(f"pool{b}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        fc = max(1, FC_CHANNELS // width)
        self._add("fc6", nn.Conv2d(cin, fc, 7))
        self._add("relu6", nn.ReLU(inplace=True))
        self._add("drop6", nn.Dropout2d())
        self._add("fc7", nn.Conv2d(fc, fc, 1))
        self._add("relu7", nn.ReLU(inplace=True))
        self._add("drop7", nn.Dropout2d())
        self.channels = {"pool3": max(1, 256 // width), "pool4": max(1, 512 // width), "fc7": fc}
        self.score_fr = self._scorer(fc)

    def _add(self, name: str, module: nn.Module) -> None:
        setattr(self, name, module)
        self._trunk_names.append(name)

    def _scorer(self, channels: int) -> nn.Conv2d:
        score = nn.Conv2d(channels, self.num_classes, 1)
        nn.init.zeros_(score.weight)
        nn.init.zeros_(score.bias)
        return score

    def _upsampler(self, kernel: int, stride: int, final: bool) -> nn.ConvTranspose2d:
        # The paper learns the 2x layers and fixes the final one; False freezes all.
        learnable = bool(self.learnable_upsampling) and not final
        return bilinear_deconv(self.num_classes, kernel, stride, padding=0, learnable=learnable)

    def features(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """pool3 (stride 8), pool4 (stride 16) and fc7 (stride 32, after dropout)."""
        taps: Dict[str, torch.Tensor] = {}
        h = x
        for name in self._trunk_names:
            h = getattr(self, name)(h)
            if name in ("pool3", "pool4"):
                taps[name] = h
        return taps["pool3"], taps["pool4"], h

    def coarse_score_net(self) -> nn.Sequential:
        """Image -> ``score_fr`` map at stride 32, as a ``Sequential`` sharing this net's modules.

        The plain layer chain that shift-and-stitch and filter rarefaction
        (:mod:`fcn_deploy.models.shift_stitch`) work on.
        """
        names = self._trunk_names + ["score_fr"]
        return nn.Sequential(OrderedDict((n, getattr(self, n)) for n in names))

    def backbone_keys(self) -> Set[str]:
        """The keys an ImageNet backbone file must cover: conv1_1 ... conv5_3, fc6, fc7."""
        return {f"{n}.{p}" for n in conv_names() + ["fc6", "fc7"] for p in ("weight", "bias")}

    def imagenet_weights(self) -> str:
        """torchvision's ImageNet VGG16, by its name in :mod:`fcn_deploy.models.weight_files`."""
        return IMAGENET_WEIGHTS

    def adapt_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Set[str]]:
        """Map a foreign VGG16/FCN file onto this net's keys; see :func:`load_pretrained`.

        Recognised layouts (a ``module.`` prefix from ``DataParallel`` is ignored):

        * torchvision's ImageNet VGG16 (``features.N.*``, ``classifier.N.*``): the 13
          convolutions are renamed ``conv1_1`` ... ``conv5_3``; ``classifier.0`` (Linear
          4096 x 25088) and ``classifier.3`` (4096 x 4096) are reshaped into the ``fc6`` 7x7
          and ``fc7`` 1x1 convolutions; ``classifier.6`` (the ImageNet scorer) is dropped.
          The backbone is required. Sets ``normalization`` to torchvision's.
        * pytorch-fcn's whole-net files (``*_from_caffe.pth``; any key named ``score_*`` or
          ``upscore*``): this net's own names; every key is required. A coarser net's file
          (FCN-32s into FCN-16s/8s, FCN-16s into FCN-8s) loads too, the paper's staged
          initialisation: its final upsampler is dropped and the finer net's new layers
          (zero scorers, bilinear upsamplers) keep their initial values. Sets ``normalization``
          to Caffe's.
        * a backbone-only file in this net's names (``conv*``, ``fc6``, ``fc7``): Caffe's.

        Unrecognised keys are passed on unchanged so that the checked load names them.
        """
        sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
        if any(k.startswith(("features.", "classifier.")) for k in sd):
            mapped = self._from_torchvision(sd)
            required = self.backbone_keys()
            if _fits(self, mapped, required):
                self.normalization = TORCHVISION_IMAGENET
            return mapped, required
        if not any(k.startswith(("score_", "upscore")) for k in sd):
            if _fits(self, sd, self.backbone_keys()):
                self.normalization = CAFFE_VGG
            return sd, self.backbone_keys()
        required = set(self.state_dict())
        file_variant = next((v for v, n in FINAL_UPSCORE.items() if f"{n}.weight" in sd), self.variant)
        if STRIDE[file_variant] > STRIDE[self.variant]:
            sd.pop(f"{FINAL_UPSCORE[file_variant]}.weight")
            required = set(sd)
            log.info("initialising FCN-%s from an FCN-%s file; left at their initial values: %s",
                     self.variant, file_variant, ", ".join(sorted(set(self.state_dict()) - required)))
        if _fits(self, sd, required):
            self.normalization = CAFFE_VGG
        return sd, required

    def _from_torchvision(self, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        own = self.state_dict()
        renames = {f"features.{i}.{p}": f"{n}.{p}"
                   for i, n in zip(TORCHVISION_CONV_INDEX, conv_names()) for p in ("weight", "bias")}
        for name, i in TORCHVISION_FC_INDEX.items():
            renames[f"classifier.{i}.weight"] = f"{name}.weight"
            renames[f"classifier.{i}.bias"] = f"{name}.bias"
        mapped: Dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            if key.startswith("classifier.6."):
                continue
            new = renames.get(key, key)
            if new in own and value.numel() == own[new].numel():
                # Linear (out, in * 7 * 7) -> Conv (out, in, 7, 7): torchvision flattens the
                # pool5 map channel-major, which is exactly a 7x7 convolution's layout.
                value = value.reshape(own[new].shape)
            mapped[new] = value
        return mapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - defined by variants
        raise NotImplementedError


def _fits(model: nn.Module, sd: Mapping[str, torch.Tensor], required: Set[str]) -> bool:
    """Whether ``sd`` will load: every key known, ``required`` covered, shapes equal.

    Used only to decide whether to switch ``normalization``; the checked load reports the
    details when it does not fit.
    """
    own = model.state_dict()
    return required <= set(sd) and all(k in own and tuple(v.shape) == tuple(own[k].shape) for k, v in sd.items())


class FCN32s(VGG16FCN):
    """FCN-32s: ``score_fr`` upsampled 32x by one bilinear deconvolution."""

    variant = "32s"

    def __init__(self, num_classes: int, learnable_upsampling: bool = True, width: int = 1) -> None:
        super().__init__(num_classes, learnable_upsampling, width)
        self.upscore = self._upsampler(64, 32, final=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, fc7 = self.features(x)
        upscore = self.upscore(self.score_fr(fc7))
        return crop_like(upscore, 19, x).contiguous()


class FCN16s(VGG16FCN):
    """FCN-16s: 2x-upsampled ``score_fr`` plus the pool4 scores, upsampled 16x."""

    variant = "16s"

    def __init__(self, num_classes: int, learnable_upsampling: bool = True, width: int = 1) -> None:
        super().__init__(num_classes, learnable_upsampling, width)
        self.score_pool4 = self._scorer(self.channels["pool4"])
        self.upscore2 = self._upsampler(4, 2, final=False)
        self.upscore16 = self._upsampler(32, 16, final=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, pool4, fc7 = self.features(x)
        upscore2 = self.upscore2(self.score_fr(fc7))  # stride 16
        score_pool4c = crop_like(self.score_pool4(pool4), 5, upscore2)
        upscore16 = self.upscore16(upscore2 + score_pool4c)
        return crop_like(upscore16, 27, x).contiguous()


class FCN8s(VGG16FCN):
    """FCN-8s: FCN-16s's fused stride-16 scores upsampled 2x, plus pool3's, upsampled 8x.

    ``at_once=True`` is the paper's all-at-once net: pool4 and pool3 are scaled by 0.01 and
    0.0001 before scoring (the scale is part of the net, not of its weights).
    """

    variant = "8s"

    def __init__(self, num_classes: int, learnable_upsampling: bool = True, width: int = 1,
                 at_once: bool = False) -> None:
        super().__init__(num_classes, learnable_upsampling, width)
        self.at_once = at_once
        self.pool4_scale, self.pool3_scale = (0.01, 0.0001) if at_once else (1.0, 1.0)
        self.score_pool4 = self._scorer(self.channels["pool4"])
        self.score_pool3 = self._scorer(self.channels["pool3"])
        self.upscore2 = self._upsampler(4, 2, final=False)
        self.upscore_pool4 = self._upsampler(4, 2, final=False)
        self.upscore8 = self._upsampler(16, 8, final=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool3, pool4, fc7 = self.features(x)
        if self.at_once:
            pool4 = pool4 * self.pool4_scale
            pool3 = pool3 * self.pool3_scale
        upscore2 = self.upscore2(self.score_fr(fc7))  # stride 16
        score_pool4c = crop_like(self.score_pool4(pool4), 5, upscore2)
        upscore_pool4 = self.upscore_pool4(upscore2 + score_pool4c)  # stride 8
        score_pool3c = crop_like(self.score_pool3(pool3), 9, upscore_pool4)
        upscore8 = self.upscore8(upscore_pool4 + score_pool3c)
        return crop_like(upscore8, 31, x).contiguous()


def _build(name: str, cls, num_classes: int, learnable_upsampling: bool = True, width: int = 1,
           pretrained: Optional[str] = None, **extra) -> VGG16FCN:
    if pretrained is not None and not isinstance(pretrained, str):
        raise FcnDeployError(f"pretrained must be a file path, a weight-file name or 'imagenet', not {pretrained!r}")
    model = cls(num_classes, learnable_upsampling=learnable_upsampling, width=width, **extra)
    model.name = name  # set before loading, so that load errors name the model
    if pretrained:
        load_pretrained(model, pretrained)
    return model


def fcn32s_vgg16(num_classes: int, **options) -> FCN32s:
    """FCN-32s (options: learnable_upsampling, width, pretrained = path, weight-file name or "imagenet")."""
    return _build("fcn32s_vgg16", FCN32s, num_classes, **options)


def fcn16s_vgg16(num_classes: int, **options) -> FCN16s:
    """FCN-16s (options as :func:`fcn32s_vgg16`)."""
    return _build("fcn16s_vgg16", FCN16s, num_classes, **options)


def fcn8s_vgg16(num_classes: int, **options) -> FCN8s:
    """FCN-8s, staged (options as :func:`fcn32s_vgg16`)."""
    return _build("fcn8s_vgg16", FCN8s, num_classes, **options)


def fcn8s_atonce_vgg16(num_classes: int, **options) -> FCN8s:
    """FCN-8s trained all at once: pool4 x 0.01, pool3 x 0.0001 (options as :func:`fcn32s_vgg16`)."""
    return _build("fcn8s_atonce_vgg16", FCN8s, num_classes, at_once=True, **options)


# This family's part of the zoo (merged by :mod:`fcn_deploy.models.zoo`).
VGG_MODELS: Dict[str, Callable[..., nn.Module]] = {
    "fcn32s_vgg16": fcn32s_vgg16,
    "fcn16s_vgg16": fcn16s_vgg16,
    "fcn8s_vgg16": fcn8s_vgg16,
    "fcn8s_atonce_vgg16": fcn8s_atonce_vgg16,
}
