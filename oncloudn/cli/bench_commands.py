"""``bench``: a group of benchmarks (``bench train CONFIG``, ``read``, ``predict``, ``zip``...).

Other sub-benchmarks add themselves by appending a module to ``BENCH_MODULES``; each exposes
``register_bench(bench_subparsers)`` adding its parser with ``func=``.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

BENCH_MODULES: list[str] = [
    "oncloudn.cli.bench_speed_commands",  # bench read, bench predict, bench zip
    "oncloudn.cli.scene_commands",  # bench scene
]
"""Modules with ``register_bench(subparsers)`` adding more ``bench`` sub-commands."""

BENCH_EPILOG = """\
examples:
  oncloudn bench train configs/tiny_cpu.yaml --steps 5
  oncloudn bench read data/test_features
  oncloudn bench predict runs/student/fold_0 data/test_features --json bench.json
  oncloudn bench zip submission.zip data
  oncloudn bench train configs/benchmark_resnet34.yaml --steps 2 --batch-size 2 \\
      --set trainer.device=cpu"""

TRAIN_EPILOG = """\
examples:
  oncloudn bench train configs/tiny_cpu.yaml
  oncloudn bench train configs/winners_efficientnet.yaml --steps 20 --batch-size 16
  oncloudn bench train configs/benchmark_resnet34.yaml --steps 2 --batch-size 2 --size 512

Steps run on synthetic raw-DN batches (no disk I/O) after one warm-up step, with the config's
device, AMP and channels-last settings. Peak memory is CUDA max_memory_allocated on GPUs and
the process's peak RSS on CPU."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` group and its sub-commands."""
    parser = subparsers.add_parser(
        "bench",
        help="measure throughput and memory (bench train CONFIG, ...)",
        description="Benchmarks that print figures (they never pass or fail).",
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench_subparsers = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    parser.set_defaults(func=lambda args: _print_help(parser))
    _register_train(bench_subparsers)
    for module_name in BENCH_MODULES:
        importlib.import_module(module_name).register_bench(bench_subparsers)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def _register_train(bench_subparsers: argparse._SubParsersAction) -> None:
    parser = bench_subparsers.add_parser(
        "train",
        help="training samples/s and peak memory of a config's model",
        description="Time a few training steps of a config's model, loss and optimizer.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", type=Path, metavar="CONFIG", help="YAML training config")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--batch-size", type=int, help="chips per step (default: the config's)")
    parser.add_argument("--size", type=int, default=512, help="chip size in pixels (default 512)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's; 1 is often fastest on a busy CPU)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable)",
    )
    parser.set_defaults(func=run_bench_train)


def run_bench_train(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.config import load_config
    from oncloudn.errors import ConfigError
    from oncloudn.training.bench import bench_train

    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1 (got {args.steps})")
    config = load_config(args.config, args.overrides)
    if args.threads is not None:
        # lazy: keeps `oncloudn --help` fast
        import torch

        torch.set_num_threads(max(1, args.threads))
    result = bench_train(config, steps=args.steps, batch_size=args.batch_size, size=args.size)
    print(
        f"bench train {args.config.name}: {config.model.network} "
        f"{config.model.args.get('arch', '')} {config.model.args.get('encoder_name', '')} "
        f"({result.params:,} params) on {result.device}, batch {result.batch_size} x "
        f"{result.size}px"
    )
    print(
        f"  {result.steps} steps in {result.seconds:.2f} s: {result.steps_per_s:.3f} steps/s, "
        f"{result.samples_per_s:.2f} samples/s, peak memory {result.peak_memory_mb:.0f} MiB "
        f"({result.memory_kind}, {result.threads} CPU threads)"
    )
    return 0
