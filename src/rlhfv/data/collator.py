"""Batches of preference pairs for DDPO: ``[chosen; rejected]`` stacked, one convention.

Example (a tiny LLaVA built locally; any HF vision-language processor works the same):

>>> import io
>>> from PIL import Image
>>> from rlhfv.tiny import build_tiny
>>> from rlhfv.data.schema import Correction
>>> from rlhfv.data.encode import encode_correction
>>> model, processor = build_tiny("llava")
>>> buf = io.BytesIO(); Image.new("RGB", (40, 30), "red").save(buf, format="PNG")
>>> pair = Correction(image=buf.getvalue(), question="What is in the image?",
...                   original="two red dogs on grass.", corrected="one red dog.")
>>> row = {**encode_correction(pair, processor), "pair_index": 7}
>>> batch = PreferenceCollator(processor, gamma=5.0)([row])
>>> sorted(batch)
['attention_mask', 'input_ids', 'labels', 'pair_index', 'pixel_values', 'token_weights']
>>> batch["input_ids"].shape, batch["pixel_values"].shape, batch["pair_index"].tolist()
(torch.Size([2, 33]), torch.Size([2, 3, 32, 32]), [7])
>>> chosen_labels, rejected_labels = batch["labels"].chunk(2)
>>> processor.tokenizer.decode(chosen_labels[0][chosen_labels[0] != -100])
'one red dog. </s>'
>>> start = row["chosen_labels_start"]
>>> batch["token_weights"][0, start:].tolist()  # one red dog . </s> <pad> <pad>
[5.0, 1.0, 5.0, 1.0, 1.0, 0.0, 0.0]
>>> batch["token_weights"][1, start:].tolist()  # two red dogs on grass . </s>
[5.0, 1.0, 5.0, 5.0, 5.0, 1.0, 1.0]
>>> float(batch["token_weights"][:, :start].abs().sum())  # prompt
0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlhfv.data.encode import open_image
from rlhfv.data.weights import token_weights

IGNORE_INDEX = -100


@dataclass
class PreferenceCollator:
    """Collate prepared rows (``rlhfv data prepare``) into one padded DDPO batch.

    For B rows the batch has 2B rows, ``[chosen_0..chosen_{B-1}; rejected_0..rejected_{B-1}]``,
    right-padded to the longest (rounded up to ``pad_to_multiple_of``):

    * ``input_ids``, ``attention_mask`` (2B, T) long;
    * ``labels`` (2B, T) long: the token id on answer tokens (and eos), -100 elsewhere, not shifted;
    * ``token_weights`` (2B, T) float: ``gamma`` on changed answer tokens, 1 on other
      answer tokens, 0 on prompt and padding (RLHF-V Eq. 5 weights);
    * every tensor the processor's image processor returns for the B images
      (``pixel_values``, ``image_sizes``, ``image_grid_thw``, ``pixel_attention_mask``...),
      concatenated twice so each image serves its chosen and its rejected row;
    * ``mm_token_type_ids`` when the processor's model needs it (Qwen2-VL M-RoPE);
    * ``pair_index`` (B,) long: the rows' ``pair_index`` (their row in the prepared
      dataset, for the reference log-prob cache), -1 where a row has none.

    The images are decoded and processed here, at collate time, from the stored bytes;
    ``gamma`` is applied here too, so changing it needs no re-preparation.
    """

    processor: Any
    gamma: float = 5.0
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        sequences, starts, changed = [], [], []
        for side in ("chosen", "rejected"):
            for row in rows:
                sequences.append(list(row[f"{side}_input_ids"]))
                starts.append(int(row[f"{side}_labels_start"]))
                changed.append(list(row[f"{side}_changed"]))
        length = max(len(s) for s in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        tokenizer = self.processor.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        n = len(sequences)
        input_ids = torch.full((n, length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        answer = torch.zeros((n, length), dtype=torch.long)
        changed_mask = torch.zeros((n, length), dtype=torch.long)
        for k, (seq, start, chg) in enumerate(zip(sequences, starts, changed, strict=True)):
            input_ids[k, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[k, : len(seq)] = 1
            answer[k, start : len(seq)] = 1
            changed_mask[k, : len(chg)] = torch.tensor(chg, dtype=torch.long)
        labels = torch.where(answer.bool(), input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "token_weights": token_weights(answer, changed_mask, self.gamma),
        }
        batch.update(self._images(rows))
        if "mm_token_type_ids" in getattr(self.processor, "model_input_names", ()):
            batch["mm_token_type_ids"] = torch.tensor(
                self.processor.create_mm_token_type_ids(input_ids.tolist()), dtype=torch.long
            )
        batch["pair_index"] = torch.tensor([int(row.get("pair_index", -1)) for row in rows], dtype=torch.long)
        return batch

    def _images(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        images = [[_as_image(row["image"], row.get("pair_index"))] for row in rows]
        # one image per sample (nested lists keep Idefics3 from reading them as one sample)
        out = self.processor.image_processor(images=images, return_tensors="pt")
        # per-image tensors and Qwen2-VL's flattened patches alike: images 0..B-1 twice
        return {k: torch.cat([v, v]) for k, v in out.items() if isinstance(v, torch.Tensor)}


def _as_image(value: Any, row: int | None):
    """A row's image: encoded bytes (prepared data) or an already decoded ``PIL.Image``."""
    if isinstance(value, bytes | bytearray):
        return open_image(bytes(value), row=row)
    return value.convert("RGB")
