"""Benchmarks: latency across backends, precisions and sizes; accuracy per backend; the pipeline.

Each script runs from the repository root (``python3 benchmarks/latency.py --help``) and is
importable (``from benchmarks import latency``) so that the tests can call ``main(argv)``.
The modules starting with ``_`` are the parts the scripts share.
"""
