"""Choose the engine image: pinned by digest, built for the GPU's platform (CUDA for NVIDIA,
ROCm for AMD), and runnable on the target nodes' driver."""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import ImageLock, PinnedImage, Platform, version_key
from llmdeploy.sizing import SpecError

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}\Z")  # \Z: `$` would accept a final newline
PLATFORM_NAMES = {"cuda": "CUDA (NVIDIA GPUs)", "rocm": "ROCm (AMD GPUs)"}


def driver_supports(driver: tuple[int, int], image: PinnedImage) -> bool:
    if image.min_driver is None:  # ROCm: no NVIDIA driver floor
        return True
    major, minor = (int(p) for p in image.min_driver.split(".")[:2])
    return driver >= (major, minor)


def select_image(
    spec: LLMDeploymentSpec,
    lock: ImageLock,
    node_drivers: Sequence[tuple[int, int]] = (),
    platform: Platform = "cuda",
) -> tuple[str, PinnedImage | None]:
    """(image reference, lock entry or None for a user override).

    Only images of `platform`. With the NVIDIA drivers of the nodes the replicas may land on,
    the newest engine release whose CUDA all of them support; without, the lock's default for
    the engine on that platform.
    """
    engine = spec.engine
    if engine.image:
        if not DIGEST.search(engine.image) and not engine.allow_unpinned_image:
            raise SpecError(
                "spec.engine.image",
                "must be pinned by digest (image@sha256:<64 hex>) "
                "unless engine.allowUnpinnedImage is true",
            )
        return engine.image, None
    entries = [e for e in lock.images if e.engine == engine.name and e.platform == platform]
    where = PLATFORM_NAMES[platform]
    if engine.version:
        entries = [e for e in entries if e.engine_version == engine.version]
        if not entries:
            known = lock.versions(engine.name, platform)
            raise SpecError(
                "spec.engine.version",
                f"no pinned {engine.name} image for version {engine.version!r} on {where}; "
                f"pinned: {', '.join(known) or 'none'}",
            )
    if not entries:
        raise SpecError("spec.engine.name", f"no pinned image for {engine.name} on {where}")
    if node_drivers and platform == "cuda":
        oldest = min(node_drivers)
        runnable = [e for e in entries if driver_supports(oldest, e)]
        if not runnable:
            raise SpecError(
                "spec.engine",
                f"the nodes' NVIDIA driver {oldest[0]}.{oldest[1]} is older than every pinned "
                f"{engine.name} image needs",
            )
        # Newest engine first; for one engine version, the newest CUDA the driver runs.
        return _newest(runnable).image, _newest(runnable)
    defaults = [e for e in entries if e.default]
    chosen = defaults[0] if defaults else _newest(entries)
    return chosen.image, chosen


def _newest(entries: Sequence[PinnedImage]) -> PinnedImage:
    return max(
        entries,
        key=lambda e: (version_key(e.engine_version), version_key(e.cuda_version or "0")),
    )
