"""Published weight files by name: served by a real local HTTP server, checked, cached under
FCN_DEPLOY_HOME and loaded into small zoo models by ``load_pretrained``."""
from __future__ import annotations

import hashlib
import io
import os
import re

import pytest
import torch
from http_helpers import FileServer, refused_url
from test_resnet_fcn import torchvision_state_dict

from fcn_deploy.download import Checksum
from fcn_deploy.errors import FcnDeployError
from fcn_deploy.models import build_model, load_pretrained
from fcn_deploy.models import weight_files
from fcn_deploy.models.weight_files import WEIGHT_FILES, weights_path
from fcn_deploy.normalization import CAFFE_VGG, TORCHVISION_IMAGENET
from fcn_deploy.training.config import TrainConfig
from fcn_deploy.training.initialization import initialise_weights, load_backbone

WIDTH = 16


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FCN_DEPLOY_HOME", str(tmp_path / "home"))


def saved(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def serve_as(monkeypatch, server: FileServer, name: str, data: bytes, checksum: Checksum) -> None:
    """Point the table entry ``name`` at the local server, with this file's own checksum."""
    entry = WEIGHT_FILES[name]
    server.files["/" + entry.filename] = data
    monkeypatch.setitem(WEIGHT_FILES, name, entry._replace(url=server.url("/" + entry.filename), checksum=checksum))


def test_torchvision_names_carry_their_sha256_prefix():
    for entry in WEIGHT_FILES.values():
        match = re.fullmatch(r"[a-z0-9]+-([0-9a-f]{8})\.pth", entry.filename)
        if entry.url.startswith("https://download.pytorch.org/"):
            assert match and entry.checksum.sha256.startswith(match.group(1)), entry
            assert entry.url.endswith("/" + entry.filename)
        else:  # pytorch-fcn's files: md5 as published
            assert re.fullmatch(r"[0-9a-f]{32}", entry.checksum.md5), entry


def test_fcn_caffe_file_by_name_loads_into_the_papers_net(monkeypatch):
    source = randomised(build_model("fcn32s_vgg16", 21, width=WIDTH), seed=1)
    data = saved(source.state_dict())  # pytorch-fcn's layout is the net's own
    seen = []
    with FileServer() as server:
        serve_as(monkeypatch, server, "fcn32s-caffe", data, Checksum(md5=hashlib.md5(data).hexdigest()))
        model = build_model("fcn32s_vgg16", 21, width=WIDTH)
        # As training starts a run: --pretrained-backbone NAME, the CLI's bar as progress.
        config = TrainConfig(model="fcn32s_vgg16", dataset="voc", pretrained_backbone="fcn32s-caffe")
        initialise_weights(model, config, progress=lambda d, t: seen.append((d, t)))
        # A finer net starts from the coarser file (the paper's staged training), from the cache.
        fcn16s = build_model("fcn16s_vgg16", 21, width=WIDTH)
        load_pretrained(fcn16s, "fcn32s-caffe", progress=lambda d, t: seen.append("again"))
        assert len(server.requests) == 1 and "again" not in seen
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.normalization == CAFFE_VGG
    assert torch.equal(fcn16s.score_fr.weight, source.score_fr.weight)
    assert seen[-1] == (len(data), len(data))
    assert open(weights_path("fcn32s-caffe"), "rb").read() == data


def test_imagenet_resnet_is_fetched_by_sha256(monkeypatch):
    state = torchvision_state_dict(18, WIDTH)
    data = saved(state)
    with FileServer() as server:
        serve_as(monkeypatch, server, "resnet18-imagenet", data, Checksum(sha256=hashlib.sha256(data).hexdigest()))
        model = build_model("fcn8s_resnet18", 2, width=WIDTH, pretrained="imagenet")
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert model.normalization == TORCHVISION_IMAGENET


def test_a_bad_download_is_refused_and_nothing_cached(monkeypatch):
    data = saved(torchvision_state_dict(18, WIDTH))
    with FileServer() as server:
        serve_as(monkeypatch, server, "resnet18-imagenet", data, Checksum(sha256="f37072fd" + "0" * 56))
        model = build_model("fcn8s_resnet18", 2, width=WIDTH)
        with pytest.raises(FcnDeployError, match="does not match its published checksum"):
            load_backbone(model, "imagenet")
    assert not os.path.exists(weights_path("resnet18-imagenet"))
    assert not os.path.exists(weights_path("resnet18-imagenet") + ".part")


def test_offline_names_the_file_and_place_and_a_placed_file_works(monkeypatch):
    source = randomised(build_model("fcn8s_vgg16", 21, width=WIDTH), seed=2)
    data = saved(source.state_dict())
    entry = WEIGHT_FILES["fcn8s-caffe"]
    monkeypatch.setitem(WEIGHT_FILES, "fcn8s-caffe",
                        entry._replace(url=refused_url(), checksum=Checksum(md5=hashlib.md5(data).hexdigest())))
    model = build_model("fcn8s_vgg16", 21, width=WIDTH)
    place = weights_path("fcn8s-caffe")
    with pytest.raises(FcnDeployError) as info:
        load_pretrained(model, "fcn8s-caffe")
    message = str(info.value)
    assert "\n" not in message and "cannot reach" in message and f"place it at {place}" in message
    with open(place, "wb") as f:
        f.write(data)
    load_pretrained(model, "fcn8s-caffe")
    assert torch.equal(model.score_pool3.weight, source.score_pool3.weight)


def test_unknown_name_or_missing_file_is_one_line(tmp_path):
    model = build_model("fcn8s_vgg16", 21, width=WIDTH)
    with pytest.raises(FcnDeployError, match="'fcn9s-caffe' is neither a file nor a published weight file; "
                                             "names: fcn16s-caffe, fcn32s-caffe, "):
        load_pretrained(model, "fcn9s-caffe")
    with pytest.raises(FcnDeployError, match="weight file not found: .*nope.pth"):
        load_pretrained(model, str(tmp_path / "nope.pth"))
    assert weight_files.available_weights() == sorted(WEIGHT_FILES)


@pytest.mark.slow  # ~10 s: a whole training run set up and written
def test_train_cli_fetches_the_imagenet_backbone_with_progress(monkeypatch, tmp_path, capsys):
    from fcn_deploy.cli import main

    state = torchvision_state_dict(18, WIDTH)
    data = saved(state)
    with FileServer() as server:
        serve_as(monkeypatch, server, "resnet18-imagenet", data, Checksum(sha256=hashlib.sha256(data).hexdigest()))
        code = main([
            "train", "--model", "fcn8s_resnet18", "--width", str(WIDTH), "--dataset", "synthetic",
            "--dataset-option", "size=(32,32)", "--dataset-option", "count=2", "--batch-size", "2",
            "--crop", "none", "--scale-range", "none", "--pretrained-backbone", "imagenet",
            "--max-iters", "1", "--val-split", "none", "--out", str(tmp_path / "run"), "--threads", "1",
        ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [p for p, _ in server.requests] == ["/resnet18-f37072fd.pth"]
    # Not a terminal here, so the CLI's progress is plain lines (a tqdm bar on a terminal).
    assert "(100%)" in captured.err and "downloaded" in captured.err
