"""Run by a venv that has one vLLM release installed (and not llmdeploy): parse each rendered
`vllm serve` command line with that release's own CLI parser, as `vllm serve` does, validate
it as the serve subcommand does, and build its AsyncEngineArgs. Reads the cases (JSON) on
stdin and takes those planned on one GPU (the argument, a catalog id); prints one line per
case; exits 1 if any case fails."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import traceback
import types
from typing import Any

import torch
import vllm.platforms

GPU = sys.argv[1]
PLATFORM = "rocm" if GPU.startswith("amd-") else "cuda"
# The device each catalog GPU shows torch: vLLM reads it while it imports and builds defaults.
DEVICES = {
    "nvidia-l4": ("NVIDIA L4", (8, 9), 23034),
    "nvidia-a10g": ("NVIDIA A10G", (8, 6), 23028),
    "nvidia-l40s": ("NVIDIA L40S", (8, 9), 46068),
    "nvidia-a100-40gb": ("NVIDIA A100-SXM4-40GB", (8, 0), 40960),
    "nvidia-a100-80gb": ("NVIDIA A100-SXM4-80GB", (8, 0), 81920),
    "nvidia-h100-80gb": ("NVIDIA H100 80GB HBM3", (9, 0), 81559),
    "nvidia-h200-141gb": ("NVIDIA H200", (9, 0), 143771),
    "nvidia-b200-180gb": ("NVIDIA B200", (10, 0), 183359),
    "amd-mi300x-192gb": ("AMD Instinct MI300X", (9, 4), 196592),
}
name, capability, mib = DEVICES[GPU]
device = types.SimpleNamespace(
    name=name,
    major=capability[0],
    minor=capability[1],
    total_memory=mib * 2**20,
    gcnArchName="gfx942:sramecc+:xnack-",  # read on ROCm only
    multi_processor_count=0,
)
# No GPU here: the compiled kernels load the driver's libcuda, and torch finds no device. The
# parser runs no kernel, so the kernel modules get an empty stand-in, torch answers with the
# pod's device, and vLLM's platform is the pod image's (CUDA, or ROCm for AMD) before
# anything reads it.


class KernelStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """An empty module for each of vLLM's compiled extensions (vllm._C, _moe_C, ...)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if not name.startswith("vllm."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not str(spec.origin).endswith(".so"):
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec: Any) -> types.ModuleType:
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


sys.meta_path.insert(0, KernelStandIn())
torch.cuda.get_device_properties = lambda device_id=None: device
torch.cuda.get_device_capability = lambda device_id=None: capability
torch.cuda.get_device_name = lambda device_id=None: name

if PLATFORM == "rocm":
    from vllm.platforms.rocm import RocmPlatform as Pinned
else:
    from vllm.platforms.cuda import CudaPlatform as Pinned
vllm.platforms._current_platform = Pinned()

from vllm import __version__  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.entrypoints.openai.cli_args import (  # noqa: E402
    make_arg_parser,
    validate_parsed_serve_args,
)

try:
    from vllm.entrypoints.cli.serve import ServeSubcommand

    PARSER = "the serve subcommand"
except (AttributeError, RuntimeError) as exc:
    # The cli package imports every subcommand; from 0.11.1 one of them asks a compiled
    # kernel at import time, which needs a GPU. The serve parser is then built from the
    # function the serve subcommand builds it with.
    ServeSubcommand = None
    PARSER = f"make_arg_parser ({type(exc).__name__} importing the cli package)"

try:  # moved in 0.11.1
    from vllm.utils.argparse_utils import FlexibleArgumentParser
except ImportError:
    from vllm.utils import FlexibleArgumentParser


def check(args: list[str], expect: dict[str, object]) -> str:
    # `vllm`'s top-level parser with the serve subcommand, parsed and validated as
    # vllm/entrypoints/cli/main.py does before it serves.
    top = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = top.add_subparsers(required=False, dest="subparser")
    if ServeSubcommand is not None:
        serve = ServeSubcommand()
        serve.subparser_init(subparsers)
        parsed = top.parse_args(["serve", *args])
        serve.validate(parsed)
    else:
        serve_parser = subparsers.add_parser("serve")
        make_arg_parser(serve_parser)
        if not any(a.dest == "model_tag" for a in serve_parser._actions):
            serve_parser.add_argument("model_tag", type=str, nargs="?")  # as serve adds it
        parsed = top.parse_args(["serve", *args])
        validate_parsed_serve_args(parsed)
    if getattr(parsed, "model_tag", None) is not None:
        parsed.model = parsed.model_tag
    engine = AsyncEngineArgs.from_cli_args(parsed)
    for field, planned in expect.items():
        value = getattr(engine, field)
        if value != planned:
            raise ValueError(f"EngineArgs.{field} is {value!r}, the plan has {planned!r}")
    return (
        f"model={engine.model} tp={engine.tensor_parallel_size} "
        f"pp={engine.pipeline_parallel_size} max_model_len={engine.max_model_len} "
        f"dtype={engine.dtype} quantization={engine.quantization} "
        f"kv_cache_dtype={engine.kv_cache_dtype}"
    )


def main() -> int:
    failed = 0
    print(f"     vllm {__version__} on {GPU}: parsed by {PARSER}")
    for case in json.load(sys.stdin):
        name = case["case"]
        if case.get("gpu") != GPU:
            continue
        try:
            summary = check(case["args"], case["expect"])
        except BaseException as exc:  # argparse exits with SystemExit on a bad argument
            failed += 1
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            print(f"FAIL vllm {__version__} {name} ({case['gpu']}): {detail}")
            print(f"     args: {' '.join(case['args'])}")
            continue
        print(f"OK   vllm {__version__} {name} ({case['gpu']}): {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
