"""secagg's benchmark suite: `python -m bench [--quick] [--workloads ...] [--flower-venv PATH] [--no-flower]`.

bench.suite runs the workloads W1-W7 of the design's benchmark table (ours, the floor, Flower 1.42) and the
scaling curves; bench.report writes docs/benchmarks.md and the charts. The older single-purpose scripts
(bench/masking.py, bench/shamir.py, bench/protocol.py, bench/ddp.py) still run on their own.
"""
