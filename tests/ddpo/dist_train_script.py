"""Train a tiny LLaVA with DDPO; run by test_distributed.py as 1 process or under torchrun.

Usage: python dist_train_script.py OUTPUT PER_DEVICE_BATCH
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import fast_config, make_prepared  # noqa: E402

from rlhfv.ddpo.trainer import train_ddpo  # noqa: E402
from rlhfv.tiny import build_tiny  # noqa: E402


def main() -> None:
    output, per_device = Path(sys.argv[1]), int(sys.argv[2])
    model, processor = build_tiny("llava", seed=0)
    prepared = make_prepared(processor, n=8)
    config = fast_config(
        per_device_batch_size=per_device,
        gradient_accumulation_steps=2,
        shuffle=True,
        max_steps=3,
        learning_rate=2e-3,
        lr_scheduler="cosine",
        warmup_ratio=0.3,
        forward="plain",
    )
    result = train_ddpo(config, model, processor, prepared, output, progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        torch.save(
            {"state": result.model.state_dict(), "history": result.history, "world": world},
            output / "result.pt",
        )


if __name__ == "__main__":
    main()
