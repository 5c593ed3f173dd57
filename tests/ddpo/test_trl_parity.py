"""With gamma = 1 and the weighted sum, DDPO is vanilla DPO: loss and gradients equal TRL's.

TRL (a dev dependency) runs its own code path: ``DPOTrainer`` builds the batch with its
vision collator and ``DPOTrainer.compute_loss`` computes the ``sigmoid`` loss with its
fused LM head, on a tiny LLaVA. Our ``DDPOObjective`` runs on a copy of the same model
with the same batch (labels from TRL's completion mask, token weights 1 on completions).
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("trl")


def _tiny_dataset():
    from datasets import Dataset
    from PIL import Image

    images = [Image.new("RGB", (40, 32), (200, 10, 10)), Image.new("RGB", (32, 48), (10, 200, 10))]
    return Dataset.from_list(
        [
            {
                "images": [images[0]],
                "prompt": "user: <image> describe the image\nassistant:",
                "chosen": " a red dog on the grass .",
                "rejected": " a blue cat on the grass near a tree .",
            },
            {
                "images": [images[1]],
                "prompt": "user: <image> what is there ?\nassistant:",
                "chosen": " two cars .",
                "rejected": " three red cars and a bus .",
            },
        ]
    )


@pytest.mark.parametrize("forward", ["plain", "auto"])
def test_ddpo_gamma1_sum_equals_trl_dpo_sigmoid(tmp_path, forward):
    from trl import DPOConfig, DPOTrainer

    from rlhfv.ddpo.config import TrainConfig
    from rlhfv.ddpo.objectives import DDPOObjective
    from rlhfv.ddpo.reference import ModelReference
    from rlhfv.tiny import build_tiny

    torch.manual_seed(0)
    model, processor = build_tiny("llava")
    reference = copy.deepcopy(model)
    # move the policy away from the reference so the loss is not log 2 and margins are non-zero
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = copy.deepcopy(model)
    beta = 0.3
    dataset = _tiny_dataset()

    args = DPOConfig(
        output_dir=str(tmp_path),
        beta=beta,
        loss_type=["sigmoid"],
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=2,
        max_length=None,
        bf16=False,
        precompute_ref_log_probs=False,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(reference),
        args=args,
        train_dataset=dataset,
        processing_class=processor,
    )
    batch = trainer.data_collator([dataset[0], dataset[1]])
    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    trl_grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    completion = batch["completion_mask"].bool()
    our_batch = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "pixel_values": batch["pixel_values"],
        "labels": batch["input_ids"].masked_fill(~completion, -100),
        "token_weights": completion.float(),  # gamma = 1: every completion token weighs 1
    }
    config = TrainConfig(
        beta=beta, gamma=1.0, normalisation="sum", reference="model", forward=forward, mixed_precision="no"
    )
    objective = DDPOObjective(config, ModelReference(reference, forward="plain"))
    ours.train()
    our_loss, metrics = objective(ours, our_batch)
    our_loss.backward()

    assert abs(trl_loss.item() - torch.log(torch.tensor(2.0)).item()) > 1e-3  # a non-trivial point
    torch.testing.assert_close(our_loss, trl_loss.detach(), atol=1e-5, rtol=0)
    our_grads = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    assert set(our_grads) == set(trl_grads)
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, trl_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    assert sum(g.abs().sum() for g in our_grads.values()) > 0
