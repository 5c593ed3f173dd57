"""The scene world's model: a real, tiny ``LlavaForConditionalGeneration``.

Built by :func:`rlhfv.tiny.build_tiny` over the world's vocabulary (a word-level
tokenizer with a chat template, a CLIP image processor, a CLIP vision tower and a Llama
language model), so ``save_pretrained`` gives a directory that ``rlhfv train``,
``rlhfv eval`` and plain ``AutoModelForImageTextToText`` / ``AutoProcessor`` load like a
hub checkpoint. The package ships the SFT checkpoint in ``scenes/checkpoint/``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rlhfv.scenes.language import world_vocabulary

CHECKPOINT_DIR = Path(__file__).parent / "checkpoint"


@dataclass(frozen=True)
class SceneModelConfig:
    """Size of the scene model: small enough to train on 2 CPU cores in minutes."""

    hidden_size: int = 128
    num_layers: int = 2
    image_size: int = 48  # the processor resizes the 96-pixel renders: 6x6 = 36 image tokens
    # 8: 2x2 image tokens per grid cell (the shipped checkpoint); 16 gives one token per cell,
    # which learned to see more slowly (docs/scene_world.md, "Measured results")
    patch_size: int = 8
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def build_scene_model(config: SceneModelConfig = SceneModelConfig()):
    """``(model, processor)``: a randomly initialised scene-world LLaVA (eval mode, fp32)."""
    from rlhfv.tiny import build_tiny

    return build_tiny(
        "llava",
        world_vocabulary(),
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        image_size=config.image_size,
        patch_size=config.patch_size,
        seed=config.seed,
    )


def load_scene_model(path: str | Path = CHECKPOINT_DIR):
    """``(model, processor)`` from a saved scene model directory (default: the shipped SFT one)."""
    from rlhfv.eval.generate import load_model

    return load_model(str(path), device="cpu", dtype="float32")


def has_shipped_checkpoint() -> bool:
    """Whether the package holds the trained SFT checkpoint."""
    return (CHECKPOINT_DIR / "model.safetensors").is_file()
