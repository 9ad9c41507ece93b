#!/usr/bin/env python3
"""Where the time goes in OpenVINO on the CPU, our graph against the peers' path, per node type.

    python3 benchmarks/op_profile.py --model fcn8s_resnet18 --precisions fp32,int8 \\
        --calib camvid:../shared/datasets/CamVid --calib-images 32 --threads 2

For each precision, our exported graph (INT8: the u8s8 one, compiled for the frame's shape as
the OpenVINO backend does) and the peers' plain export (INT8: NNCF's) take turns for
``--iters`` frames each with OpenVINO's per-node counters (``PERF_COUNT``); the milliseconds
per frame are summed by node type (medians over the frames), and the convolutions are listed
by the oneDNN kernel they were compiled to. It answers how much a graph rewrite could still
take off: when both paths' convolutions run the same kernels, our graph can at best lose
everything but its convolutions, so the ratio is bounded by the peer's total (its graph plus
the numpy normalisation and arg-max around it, timed as the latency benchmark times them)
over our convolutions (``bound``). The counters add a little time per node, so compare the
shares and the bound, not the totals, with the latency benchmark's p50s.

Both paths compile with the same ``INFERENCE_PRECISION_HINT``: f32 for fp32 and int8 (an INT8
graph's convolutions stay integer), bf16 for ``bf16`` (the FP32 graphs in bfloat16, where the
CPU has it). Without the hint OpenVINO would pick bf16 by itself on a CPU with AVX512_BF16 or AMX.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

import os
if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _runners, _variants
from fcn_deploy.errors import FcnDeployError, first_line
from fcn_deploy.options import parse_key_values, parse_size

CONVOLUTIONS = ("Convolution", "GroupConvolution", "Deconvolution", "ConvolutionBackpropData")
NUMPY = "numpy (normalise, arg-max)"


def compile_profiled(path: str, x: np.ndarray, threads: int, precision: str = "fp32") -> Any:
    """An infer request with per-node counters for ``path``, compiled for ``x``'s shape, its
    float layers in ``precision`` (fp32 or bf16: OpenVINO's INFERENCE_PRECISION_HINT)."""
    from fcn_deploy.runtime.backends.openvino import PRECISION_HINTS, read_onnx_model, shared_core

    core = shared_core()
    model = read_onnx_model(path)
    if model.inputs[0].get_partial_shape().is_dynamic:
        model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                 "PERF_COUNT": True, "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]})
    return compiled.create_infer_request()


def profile(runs: Dict[str, Tuple[Any, np.ndarray, Optional[Tuple[np.ndarray, Any]]]], warmup: int,
            iters: int) -> Dict[str, Tuple[Dict[str, float], collections.Counter]]:
    """For each named ``(request, input, host)``: the median ms per frame by node type and the
    convolutions counted by (type, kernel). The runs take turns, one frame each, so a busy
    moment of the machine falls on all of them alike. ``host`` (the peers' path: the uint8
    frames and the normalisation) adds the numpy work around the graph: normalising the frames,
    the arg-max of the logits."""
    from fcn_deploy.runtime.backends.base import normalize_frames

    samples: Dict[str, Dict[str, List[float]]] = {name: collections.defaultdict(list) for name in runs}
    kernels: Dict[str, collections.Counter] = {name: collections.Counter() for name in runs}
    for i in range(warmup + iters):
        for name, (request, x, host) in runs.items():
            request.infer({0: x})
            if i < warmup:
                continue
            per_type: Dict[str, float] = collections.defaultdict(float)
            for node in request.profiling_info:
                per_type[node.node_type] += node.real_time.total_seconds() * 1e3
                if i == warmup and node.node_type in CONVOLUTIONS:
                    kernels[name][node.node_type, node.exec_type] += 1
            if host is not None:
                start = time.perf_counter()
                normalize_frames(*host)
                np.asarray(request.get_output_tensor(0).data).argmax(axis=1).astype(np.uint8)
                per_type[NUMPY] = (time.perf_counter() - start) * 1e3
            for node_type, ms in per_type.items():
                samples[name][node_type].append(ms)
    return {name: ({t: float(np.median(v)) for t, v in samples[name].items()}, kernels[name]) for name in runs}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/op_profile.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="camvid",
                   help="zoo name (random weights), 'camvid' (the bundled model) or a checkpoint")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="zoo model build option")
    p.add_argument("--precisions", default="fp32,int8",
                   help="fp32, bf16, int8 or all (default fp32,int8; bf16 where the CPU has it)")
    p.add_argument("--size", default="360x480", help="frame size HxW (default 360x480)")
    p.add_argument("--calib", default="synthetic", help="INT8 calibration frames: a folder or DATASET[:ROOT]")
    p.add_argument("--calib-images", type=int, default=16, help="INT8 calibration images (default 16)")
    p.add_argument("--threads", type=int, default=2, help="OpenVINO inference threads (default 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--iters", type=int, default=10, help="profiled runs (default 10)")
    p.add_argument("--workdir", default=None, help="where exports are cached (default: the benchmarks' cache)")
    args = p.parse_args(argv)
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("op_profile.py: error: openvino is not installed: pip install 'fcn-deploy[openvino]'", file=sys.stderr)
        return 1
    try:
        h, w = parse_size(args.size)
        precisions = _runners._parse_choices(args.precisions, ("fp32", "bf16", "int8"), "precision")
        if not precisions:
            raise FcnDeployError("--precisions is empty; choose from fp32, bf16, int8 or all")
        if "bf16" in precisions:
            problem = _runners.openvino_bf16_problem("openvino")
            if problem:
                raise FcnDeployError(problem)
        source = _variants.open_source(args.model, 11, parse_key_values(args.option))
        if not source.has_torch_model:
            raise FcnDeployError(f"{args.model} is a file; the peers' path exports from a checkpoint or zoo name")
        workdir = args.workdir or _variants.default_workdir()
        ours, peers = _variants.ExportCache(workdir), _variants.PeerExports(workdir)
        calibration = _variants.Calibration(args.calib, args.calib_images, (h, w), "u8s8")
        frames = _variants.random_frames(1, h, w)
        from fcn_deploy.runtime.backends.base import normalize_frames

        normalization = source.resolved.model.normalization
        normalized = normalize_frames(frames, normalization)
        profiles: Dict[str, Dict[str, Tuple[Dict[str, float], collections.Counter]]] = {}
        for precision in precisions:
            scheme = "u8s8" if precision == "int8" else "s8s8"
            graph = _runners.graph_precision(precision)
            floats = "bf16" if precision == "bf16" else "fp32"
            our_file = ours.onnx(source, graph, "labels", calibration if precision == "int8" else None, scheme)
            peer_file = (peers.fp32(source, (1, h, w)) if graph == "fp32"
                         else peers.int8_openvino(source, (1, h, w), calibration))
            runs = {"ours": (compile_profiled(our_file, frames, args.threads, floats), frames, None),
                    "peer": (compile_profiled(peer_file, normalized, args.threads, floats), normalized,
                             (frames, normalization))}
            profiles[precision] = profile(runs, args.warmup, args.iters)
    except (FcnDeployError, OSError, RuntimeError) as exc:
        print(f"op_profile.py: error: {first_line(exc)}", file=sys.stderr)
        return 1

    print(f"{source.name}, {h}x{w}, batch 1, OpenVINO CPU, {args.threads} threads, {args.iters} profiled runs; "
          "ms per frame by node type (PERF_COUNT)")
    for precision, paths in profiles.items():
        for path, (ms, kernels) in paths.items():
            total = sum(ms.values())
            conv = sum(v for k, v in ms.items() if k in CONVOLUTIONS)
            others = sorted(((v, k) for k, v in ms.items() if k not in CONVOLUTIONS), reverse=True)[:4]
            print(f"{path:4}  {precision}  total {total:6.1f} ms  convolutions {conv:6.1f} ms "
                  f"({100 * conv / total:4.1f}%)  then: " + ", ".join(f"{k} {v:.1f}" for v, k in others))
            print("      kernels: " + ", ".join(f"{n} {t} {e}" for (t, e), n in sorted(kernels.items())))
        our_conv = sum(v for k, v in paths["ours"][0].items() if k in CONVOLUTIONS)
        print(f"      bound: peer total / our convolutions = {sum(paths['peer'][0].values()) / our_conv:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
