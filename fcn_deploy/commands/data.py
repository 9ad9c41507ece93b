"""``fcn-deploy data``: download, check and unpack a public dataset (see :mod:`fcn_deploy.data.download`)."""
from __future__ import annotations

import argparse
import sys

NAMES = ("camvid", "voc", "sbd", "cityscapes")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="download a dataset (CamVid, PASCAL VOC, SBD, Cityscapes) into the layout train/eval read",
        description="Download a public dataset from where it is published, check it against the "
        "publisher's checksum, and unpack it into ROOT in the layout `--dataset NAME --root ROOT` "
        "reads. An interrupted download resumes; a download that fails its check changes nothing "
        "and is removed from the cache, so the next run fetches it again. "
        "sbd goes into the same ROOT as voc (for --dataset voc_aug). Cityscapes needs a login: "
        "the command prints the steps.",
    )
    parser.add_argument("name", choices=NAMES, help="the dataset")
    parser.add_argument("--root", required=True, metavar="DIR", help="where to put it (e.g. data/CamVid)")
    parser.add_argument("--url", default=None, metavar="MIRROR",
                        help="fetch the archive from this base URL instead (its file must still match "
                        "the published checksum)")
    parser.add_argument("--force", action="store_true",
                        help="replace what ROOT already holds of this dataset (only once the new copy passes its checks)")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive in the cache")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="network timeout in seconds")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.download import ManualDownloadRequired, fetch_dataset
    from ._progress import DownloadProgress

    progress = DownloadProgress()
    try:
        result = fetch_dataset(args.name, args.root, mirror=args.url, force=args.force,
                               keep_archives=args.keep_archive, progress=progress, timeout_s=args.timeout)
    except ManualDownloadRequired as exc:
        progress.close()
        for line in exc.steps:
            print(line, file=sys.stderr)
        raise
    finally:
        progress.close()
    if not result.installed:
        print(f"{result.name} is already in {result.root} (--force downloads it again)")
    else:
        counts = ", ".join(f"{n} {split} items" for split, n in result.items.items())
        print(f"{result.name} is ready in {result.root}" + (f" ({counts})" if counts else ""))
    dataset = "voc_aug" if result.name == "sbd" else result.name
    print(f"next: fcn-deploy train --dataset {dataset} --root {result.root} --model MODEL")
    return 0
