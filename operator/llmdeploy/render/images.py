"""Choose the engine image: pinned by digest, built for the GPU's platform (CUDA for NVIDIA,
ROCm for AMD), and runnable on the target nodes' driver."""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import ImageLock, PinnedImage, Platform
from llmdeploy.sizing import SpecError

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}\Z")  # \Z: `$` would accept a final newline
PLATFORM_NAMES = {"cuda": "CUDA (NVIDIA GPUs)", "rocm": "ROCm (AMD GPUs)"}


def select_image(
    spec: LLMDeploymentSpec,
    lock: ImageLock,
    node_drivers: Sequence[tuple[int, int]] = (),
    platform: Platform = "cuda",
    planned_version: str | None = None,
) -> tuple[str, PinnedImage | None]:
    """(image reference, lock entry or None for a user override).

    Only images of `platform`, of the release the plan was sized for (`planned_version`;
    spec.engine.version wins), chosen by the lock the way the planner chose it: with the
    NVIDIA drivers of the nodes the replicas may land on, the newest release (and CUDA) all
    of them run; without, the lock's default for the engine on that platform.
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
    where = PLATFORM_NAMES[platform]
    version = engine.version
    if version is None and lock.entries(engine.name, platform, planned_version):
        version = planned_version  # else a lock that no longer pins it: the lock's choice
    if not lock.entries(engine.name, platform, version):
        if version:
            known = lock.versions(engine.name, platform)
            raise SpecError(
                "spec.engine.version",
                f"no pinned {engine.name} image for version {version!r} on {where}; "
                f"pinned: {', '.join(known) or 'none'}",
            )
        raise SpecError("spec.engine.name", f"no pinned image for {engine.name} on {where}")
    drivers = node_drivers if platform == "cuda" else ()
    chosen = lock.choose(engine.name, platform, version, drivers)
    if chosen is None:
        oldest = min(drivers)
        raise SpecError(
            "spec.engine",
            f"the nodes' NVIDIA driver {oldest[0]}.{oldest[1]} is older than every pinned "
            f"{engine.name}{f' {version}' if version else ''} image needs",
        )
    return chosen.image, chosen
