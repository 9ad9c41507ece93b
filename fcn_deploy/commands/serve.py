"""``fcn-deploy serve``: a real Triton Inference Server hosting a model on this machine."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model with Triton Inference Server (dynamic batching, HTTP/gRPC, metrics)",
        description="Start Triton Inference Server on this machine, hosting one model with dynamic batching; "
        "our backends run it inside Triton's Python backend (on the CPU, or a GPU with --device). Clients use "
        "--model triton://HOST:HTTP_PORT/NAME (or triton+grpc://HOST:GRPC_PORT/NAME). Ctrl-C or SIGTERM stops it "
        "cleanly. The server is the tritonserver binary from NVIDIA's PyTriton wheel, fetched once with pip "
        "download --no-deps (nothing is installed).",
    )
    p.add_argument("--model", default="camvid", metavar="M",
                   help="an exported .onnx (or .engine with --device cuda) file, or camvid (the bundled model; default)")
    p.add_argument("--name", default=None, help="the model's name on the server (default: camvid, or the file's stem)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the HTTP, gRPC and metrics ports listen on (default 127.0.0.1: this machine only; "
                   "0.0.0.0: every interface, see docs/security.md)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="largest batch the dynamic batcher forms, and the most frames one request may carry (default 8)")
    p.add_argument("--max-frame", default=None, metavar="HxW",
                   help="largest frame (height x width) a request may carry (default: an engine's profile maximum, "
                   "else 4 x the long side of the model's training scale: 1920x1920 for camvid); larger ones get "
                   "an error reply")
    p.add_argument("--queue-delay-us", type=int, default=2000, metavar="US",
                   help="how long the batcher waits to fill a batch, in microseconds (default 2000)")
    p.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    p.add_argument("--device", default=None, help="where the model runs: cpu (default for ONNX), cuda, tensorrt")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads per instance")
    p.add_argument("--tritonserver", default=None, metavar="WHEEL|DIR",
                   help="a PyTriton wheel or an unpacked tritonserver folder (default: found or fetched, see docs)")
    p.add_argument("--start-timeout", type=float, default=120.0, metavar="S",
                   help="seconds to wait for the model to be ready (default 120)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal

    from ..errors import FcnDeployError
    from ..runtime.assets import BUNDLED_MODELS
    from ..runtime.model_files import ENGINE, ONNX, default_device, model_kind, read_metadata, resolve_model_file
    from ..serve.bounds import parse_frame
    from ..serve.install import find_tritonserver
    from ..serve.server import ADMIN_APIS, ADMIN_HEADER, ADMIN_KEY_ENV, ServeOptions, TritonServer, check_admin_key, input_bounds

    log = logging.getLogger("fcn_deploy.serve")
    path = str(resolve_model_file(args.model, (ONNX, ENGINE)))
    kind = model_kind(path)
    device = args.device or default_device(kind)
    if args.threads is not None and args.threads < 1:
        raise FcnDeployError(f"--threads must be >= 1, not {args.threads}")
    name = args.name or (args.model if args.model in BUNDLED_MODELS else os.path.splitext(os.path.basename(path))[0])
    metadata = read_metadata(path)
    try:
        max_frame = parse_frame(args.max_frame) if args.max_frame else None
    except ValueError as exc:
        raise FcnDeployError(str(exc)) from None
    admin_key = os.environ.get(ADMIN_KEY_ENV)
    options = ServeOptions(path, name, args.http_port, args.grpc_port, args.metrics_port, args.max_batch,
                           args.queue_delay_us, args.instances, device, args.threads, args.host, max_frame,
                           check_admin_key(admin_key) if admin_key else None)
    install = find_tritonserver(args.tritonserver)
    server = TritonServer(install, options, metadata)

    stopping = []

    def stop(signum, frame):  # SIGINT / SIGTERM: stop the server; wait() below then returns
        stopping.append(signum)
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start(args.start_timeout)
        except FcnDeployError:
            if stopping:  # Ctrl-C while the model was loading: a stop, not a failure
                log.info("stopped before the model was ready")
                return 130
            raise
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        print(f"serving {metadata.model_name} ({metadata.precision}, {device}) as {name!r} with Triton "
              f"(max batch {args.max_batch}, queue delay {args.queue_delay_us} us, {args.instances} instance(s))",
              flush=True)
        print(f"  --model triton://{host}:{args.http_port}/{name}        (HTTP)", flush=True)
        print(f"  --model triton+grpc://{host}:{args.grpc_port}/{name}   (gRPC)", flush=True)
        print(f"  health  http://{host}:{args.http_port}/v2/health/ready   metrics  http://{host}:{args.metrics_port}/metrics",
              flush=True)
        print(f"  listening on {args.host}" + ("" if args.host in ("127.0.0.1", "localhost", "::1") else
                                               " (reachable from the network: see docs/security.md)"), flush=True)
        print(f"  requests up to {input_bounds(options, metadata).describe()}", flush=True)
        if admin_key:
            print(f"  admin APIs ({', '.join(ADMIN_APIS)}) open to requests with the header {ADMIN_HEADER}", flush=True)
        else:
            print(f"  admin APIs ({', '.join(ADMIN_APIS)}) closed; ${ADMIN_KEY_ENV} opens them", flush=True)
        print("Ctrl-C stops the server", flush=True)
        code = server.wait()
        if not stopping:
            server._temporary = False  # keep the log of a server that stopped by itself
            raise FcnDeployError(f"Triton stopped by itself (status {code}); see {server.log_path}")
        log.info("stopped")
        return 0
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
