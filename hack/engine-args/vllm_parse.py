"""Run by a venv that has one vLLM release installed (and not llmdeploy): parse each rendered
`vllm serve` command line with that release's own CLI parser, as `vllm serve` does, validate
it as the serve subcommand does, and build its AsyncEngineArgs. Reads the cases (JSON) on
stdin and takes those of one platform (argument: cuda or rocm, the image the pod runs);
prints one line per case; exits 1 if any case fails.

There is no GPU here, so vLLM's platform detection finds none; the platform the pod's image
is built for is set instead, before anything reads it (defaults such as the device type come
from it)."""

from __future__ import annotations

import json
import sys
import traceback
import types

import vllm.platforms

PLATFORM = sys.argv[1]
# The compiled kernels load the NVIDIA driver's libcuda, absent without a GPU; the parser
# does not run a kernel, so the platform module gets an empty stand-in for them.
for kernels in ("vllm._C", "vllm._rocm_C"):
    sys.modules.setdefault(kernels, types.ModuleType(kernels))
if PLATFORM == "rocm":
    import torch
    from vllm.platforms.rocm import RocmPlatform as Pinned

    # The ROCm platform reads the device (its GCN architecture) while it builds defaults;
    # the device is the MI300X the AMD plans run on (gfx942, 192 GiB).
    mi300x = types.SimpleNamespace(
        gcnArchName="gfx942:sramecc+:xnack-",
        name="AMD Instinct MI300X",
        total_memory=192 * 2**30,
        major=9,
        minor=4,
    )
    torch.cuda.get_device_properties = lambda device=None: mi300x
    torch.cuda.get_device_capability = lambda device=None: (9, 4)
else:
    from vllm.platforms.cuda import CudaPlatform as Pinned
vllm.platforms._current_platform = Pinned()

from vllm import __version__  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.entrypoints.cli.serve import ServeSubcommand  # noqa: E402

try:  # moved in 0.11.1
    from vllm.utils.argparse_utils import FlexibleArgumentParser
except ImportError:
    from vllm.utils import FlexibleArgumentParser


def check(args: list[str], expect: dict[str, object]) -> str:
    # `vllm`'s top-level parser with the serve subcommand, parsed and validated as
    # vllm/entrypoints/cli/main.py does before it serves.
    top = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = top.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand()
    serve.subparser_init(subparsers)
    parsed = top.parse_args(["serve", *args])
    serve.validate(parsed)
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
    for case in json.load(sys.stdin):
        name = case["case"]
        if case.get("platform", PLATFORM) != PLATFORM:
            continue
        if "skipped" in case:
            print(f"SKIP vllm {__version__} {name}: not renderable: {case['skipped']}")
            continue
        try:
            summary = check(case["args"], case["expect"])
        except BaseException as exc:  # argparse exits with SystemExit on a bad argument
            failed += 1
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            print(f"FAIL vllm {__version__} ({PLATFORM}) {name} ({case['gpu']}): {detail}")
            print(f"     args: {' '.join(case['args'])}")
            continue
        print(f"OK   vllm {__version__} ({PLATFORM}) {name} ({case['gpu']}): {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
