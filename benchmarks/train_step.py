"""One DPO training step, side by side: TRL ``DPOTrainer`` vs rlhfv (plain and shared-prefix forward).

Same model, same preference pairs, three variants, each in a fresh Python process so their
memory does not mix:

* ``trl``: ``DPOTrainer.training_step`` (forward, loss, backward; TRL runs its reference
  model forward inside the step: it refuses precomputed reference log-probs for vision
  data) followed by the optimizer step;
* ``plain``: rlhfv's DDPO objective with ``forward="plain"`` (the 2B stacked rows), the
  reference log-probs read from the cache (``PrecomputedReference``), backward, AdamW step;
* ``shared_prefix``: the same with ``forward="shared_prefix"`` (image + prompt once per pair).

Per variant: ``tokens_per_second`` = real tokens of the pairs in the stacked
``[chosen; rejected]`` layout (image tokens included: the work the batch stands for,
whatever a variant does with it) / seconds of the fastest timed step (on a shared
machine the slower ones measure the neighbours; the mean is reported too);
``peak_memory_mb`` = on the CPU the peak resident set size (VmHWM) during the timed
steps, model, reference and optimizer state included; on the GPU
``torch.cuda.max_memory_allocated``; ``gflop_per_step``: matmul/convolution FLOPs of one
step (``torch.utils.flop_counter``), a count no neighbour on the machine can disturb,
taken in one more step after the timed ones (``null`` where the counter fails, as it
does in TRL's CUDA path with torch 2.11). One untimed warm-up step comes first (it
allocates the optimizer state). Batches are collated before timing in every variant.
Each variant prints one line to stderr as it finishes.

CPU (default): a LLaVA-1.5-shaped model scaled down 16x in width (text 256 wide, 4 layers,
vocabulary 2048; CLIP vision 336 px, patch 14 -> 576 image tokens), random weights, fp32;
answers of about 128 tokens. ``--gpu``: bf16, the LLaVA-1.5-7B configuration with random
weights (no network), LoRA and full fine-tuning, both with gradient checkpointing.

    python benchmarks/train_step.py            # table
    python benchmarks/train_step.py --json     # {"variants": {...}, "speedup_vs_trl": X, "memory_ratio_vs_trl": Y}
    python benchmarks/train_step.py --gpu --json
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("trl", "plain", "shared_prefix")
GPU_MODES = ("lora", "full")

# LLaVA-1.5 shapes: CLIP ViT-L/14 at 336 px (576 patches + CLS), Llama-2-7B text model.
LLAVA_7B = dict(
    vision=dict(
        image_size=336,
        patch_size=14,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        projection_dim=768,
    ),
    text=dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32064,
        rms_norm_eps=1e-5,
    ),
)
# The same shape scaled for 2 CPU cores: widths / 16, fewer layers, image size kept (576 tokens).
LLAVA_CPU = dict(
    vision=dict(
        image_size=336,
        patch_size=14,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=128,
    ),
    text=dict(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=2048,
        rms_norm_eps=1e-5,
    ),
)


# ---------------------------------------------------------------------------- model and data


def build_model_and_processor(shape: dict, device: str, dtype):
    """A LlavaForConditionalGeneration with random weights and a local word-level processor."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from rlhfv.tiny import DEFAULT_WORDS, tiny_chat_template, word_level_tokenizer

    vocab = shape["text"]["vocab_size"]
    template = tiny_chat_template("llava")
    words = list(DEFAULT_WORDS)
    filler = [f"w{i}" for i in range(vocab)]  # fill the vocabulary up to the configured size
    tokenizer = word_level_tokenizer([*words, *filler], ["<image>"], template)
    # the tokenizer adds punctuation; cut the filler so len(tokenizer) <= vocab
    extra = len(tokenizer) - vocab
    if extra > 0:
        tokenizer = word_level_tokenizer([*words, *filler[: len(filler) - extra]], ["<image>"], template)
    side = shape["vision"]["image_size"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, do_center_crop=True
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=shape["vision"]["patch_size"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**shape["vision"]),
        text_config=LlamaConfig(
            **shape["text"],
            max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=False,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        image_seq_length=(side // shape["vision"]["patch_size"]) ** 2,
    )
    config._attn_implementation = "sdpa"
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    return model, processor


def make_pairs(n_pairs: int, answer_words: int, side: int, seed: int = 0) -> list[dict]:
    """Preference pairs like RLHF-V corrections: the rejected answer is the chosen one with
    about one word in eight replaced, and a little longer or shorter."""
    import numpy as np
    from PIL import Image

    from rlhfv.tiny import DEFAULT_WORDS

    rng = random.Random(seed)
    words = [w for w in DEFAULT_WORDS if w not in ("user", "assistant", "system")]
    questions = ["describe the image in detail .", "what is in the picture ?", "describe this photo ."]
    pairs = []
    for i in range(n_pairs):
        chosen = [rng.choice(words) for _ in range(answer_words + rng.randint(-6, 6))]
        rejected = [rng.choice(words) if rng.random() < 0.125 else w for w in chosen]
        rejected += [rng.choice(words) for _ in range(rng.randint(0, 8))]
        pixels = np.random.default_rng(seed + i).integers(0, 256, (side, side, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        pairs.append(
            dict(
                image=buf.getvalue(),
                question=questions[i % len(questions)],
                chosen=" ".join(chosen) + " .",
                rejected=" ".join(rejected) + " .",
            )
        )
    return pairs


def rlhfv_batch(pairs: list[dict], processor) -> dict:
    from rlhfv.data.collator import PreferenceCollator
    from rlhfv.data.encode import encode_correction
    from rlhfv.data.schema import Correction

    rows = []
    for i, p in enumerate(pairs):
        record = Correction(
            image=p["image"], question=p["question"], original=p["rejected"], corrected=p["chosen"]
        )
        rows.append({**encode_correction(record, processor), "pair_index": i})
    return PreferenceCollator(processor, gamma=5.0)(rows)


def trl_examples(pairs: list[dict], processor) -> list[dict]:
    from PIL import Image

    from rlhfv.data.encode import render_prompt

    eos = processor.tokenizer.eos_token
    return [
        dict(
            images=[Image.open(io.BytesIO(p["image"])).convert("RGB")],
            prompt=render_prompt(processor, p["question"]),
            chosen=" " + p["chosen"] + " " + eos,
            rejected=" " + p["rejected"] + " " + eos,
        )
        for p in pairs
    ]


def lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    )


# ---------------------------------------------------------------------------- memory


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux: ``5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """VmHWM of this process in MiB (ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- one variant


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    """Build everything, run one warm-up step and ``args.steps`` timed steps; return the measurements."""
    import torch

    # every variant imports the same libraries, so none carries another's import memory
    import trl  # noqa: F401

    from rlhfv.ddpo.config import TrainConfig
    from rlhfv.ddpo.forward import token_logps
    from rlhfv.ddpo.objectives import DDPOObjective
    from rlhfv.ddpo.reference import PrecomputedReference, answer_logps

    gpu = args.gpu  # the GPU recipe: bf16, LoRA or full fine-tuning, gradient checkpointing
    device = "cpu" if args.dry_run or not gpu else "cuda"
    on_cuda = device == "cuda"
    if not on_cuda:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = LLAVA_7B if on_cuda else LLAVA_CPU
    dtype = torch.bfloat16 if gpu else torch.float32
    model, processor = build_model_and_processor(shape, device, dtype)
    pairs = make_pairs(args.pairs, args.answer_words, shape["vision"]["image_size"])
    ours = rlhfv_batch(pairs, processor)
    tokens = int(ours["attention_mask"].sum())
    if gpu:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    extra: dict = {}
    if variant == "trl":
        step, extra["trl_batch_tokens"] = _trl_step(model, processor, pairs, args, tmp=tempfile.mkdtemp())
    else:
        with torch.no_grad():  # the cache is filled once, before training: not part of a step
            model.eval()
            on_device = {k: v.to(device) for k, v in ours.items()}
            ref = answer_logps(token_logps(model, on_device, mode="plain"), on_device["labels"])
        from datasets import Dataset

        table = Dataset.from_dict({"chosen_logps": ref[: args.pairs], "rejected_logps": ref[args.pairs :]})
        if gpu and args.mode == "lora":
            from peft import get_peft_model

            model = get_peft_model(model, lora_config())
        model.train()
        objective = DDPOObjective(TrainConfig(forward=variant, beta=0.1), PrecomputedReference(table))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-6, fused=True)  # as TRL (Trainer default)

        def step() -> None:
            batch = {k: v.to(device, non_blocking=True) for k, v in ours.items()}
            loss, _metrics = objective(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    from torch.utils.flop_counter import FlopCounterMode

    step()  # warm-up: optimizer state, allocator pools, kernel selection
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset = reset_peak_rss()
    walls, cpus = [], []
    for _ in range(args.steps):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        if on_cuda:
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    peak = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else peak_rss_mb()
    # FLOPs of one more step, counted after the timing: the counter cannot handle every
    # op's signature (TRL's CUDA path fails in it with torch 2.11), which must not cost
    # the measurements
    gflop = None
    try:
        with FlopCounterMode(display=False) as counter:
            step()
        gflop = counter.get_total_flops() / 1e9
    except Exception as error:  # noqa: BLE001 - any counter failure only loses the count
        print(f"FLOP count failed: {type(error).__name__}: {error}", file=sys.stderr)
    # the fastest step: on a shared machine the slower ones measure the neighbours
    best = min(walls)
    return dict(
        tokens_per_second=tokens / best,
        peak_memory_mb=peak,
        seconds_per_step=best,
        mean_seconds_per_step=sum(walls) / len(walls),
        cpu_seconds_per_step=sum(cpus) / len(cpus),
        gflop_per_step=gflop,
        tokens_per_step=tokens,
        peak_is_steady_state=bool(on_cuda or reset),
        **extra,
    )


def _trl_step(model, processor, pairs, args, tmp: str):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    gpu = args.gpu
    examples = trl_examples(pairs, processor)
    dataset = Dataset.from_list(
        [
            dict(prompt=e["prompt"], chosen=e["chosen"], rejected=e["rejected"], images=e["images"])
            for e in examples
        ]
    )
    config = DPOConfig(
        output_dir=tmp,
        per_device_train_batch_size=args.pairs,
        learning_rate=1e-6,
        beta=0.1,
        max_length=None,
        report_to="none",
        use_cpu=args.dry_run or not gpu,
        bf16=gpu,
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        gradient_checkpointing=gpu,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    lora = gpu and args.mode == "lora"
    # full fine-tuning: TRL keeps a frozen copy of the policy as reference (built from the
    # model id otherwise; a random model has none, so we hand it the copy it would build)
    ref_model = None if lora else copy.deepcopy(model).eval().requires_grad_(False)
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=config,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config() if lora else None,
    )
    batch = trainer.data_collator([dict(e) for e in examples])
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop otherwise
    trainer.model.train()
    print(f"TRL optimizer: {type(trainer.optimizer).__name__} {trainer.optimizer.defaults}", file=sys.stderr)

    def step() -> None:
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    # TRL tokenizes the same pairs itself; its count is reported beside ours as a check
    return step, int(batch["attention_mask"].sum())


# ---------------------------------------------------------------------------- driver


def measure(variant: str, args: argparse.Namespace, mode: str | None = None) -> dict:
    """Run one variant in a fresh interpreter and parse its JSON line."""
    cmd = [
        sys.executable, __file__, "--_child", variant,
        "--pairs", str(args.pairs), "--answer-words", str(args.answer_words),
        "--steps", str(args.steps), "--threads", str(args.threads),
    ]  # fmt: skip
    if args.gpu:
        cmd += ["--gpu", "--mode", mode or "lora"] + (["--dry-run"] if args.dry_run else [])
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    label = f"{mode or 'lora'}/{variant}" if args.gpu else variant
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        result = {"error": " | ".join(tail) or f"exit status {proc.returncode}"}
        print(
            f"{label}: failed after {time.perf_counter() - started:.0f} s: {result['error']}", file=sys.stderr
        )
        return result
    result = json.loads(lines[-1])
    # one line per variant as it finishes, so a run cut short still shows what it measured
    print(
        f"{label}: {result['tokens_per_second']:.1f} tokens/s, {result['peak_memory_mb']:.0f} MB peak, "
        f"{result['seconds_per_step']:.2f} s/step ({time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return result


def summarise(variants: dict[str, dict]) -> dict:
    trl, shared = variants.get("trl", {}), variants.get("shared_prefix", {})
    out: dict = {"variants": variants}
    if "tokens_per_second" in trl and "tokens_per_second" in shared:
        out["speedup_vs_trl"] = shared["tokens_per_second"] / trl["tokens_per_second"]
        out["memory_ratio_vs_trl"] = shared["peak_memory_mb"] / trl["peak_memory_mb"]
    else:
        out["speedup_vs_trl"] = None
        out["memory_ratio_vs_trl"] = None
    return out


def table(result: dict, title: str) -> str:
    trl = result["variants"].get("trl", {})
    head = ("variant", "tokens/s", "peak MB", "s/step", "CPU s/step", "GFLOP", "speed vs TRL", "mem vs TRL")
    widths = (-15, 10, 10, 9, 12, 9, 14, 12)
    rows = [title, "".join(f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w in zip(head, widths, strict=True))]
    for name, v in result["variants"].items():
        if "error" in v:
            rows.append(f"{name:<15}  failed: {v['error']}")
            continue
        speed = (
            v["tokens_per_second"] / trl["tokens_per_second"] if "tokens_per_second" in trl else float("nan")
        )
        mem = v["peak_memory_mb"] / trl["peak_memory_mb"] if "peak_memory_mb" in trl else float("nan")
        rows.append(
            f"{name:<15}{v['tokens_per_second']:>10.1f}{v['peak_memory_mb']:>10.0f}{v['seconds_per_step']:>9.2f}"
            f"{v['cpu_seconds_per_step']:>12.2f}{_gflop(v):>9}{speed:>13.2f}x{mem:>11.2f}x"
        )
    return "\n".join(rows)


def _gflop(variant: dict) -> str:
    return "n/a" if variant["gflop_per_step"] is None else f"{variant['gflop_per_step']:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--gpu", action="store_true", help="bf16 LLaVA-1.5-7B shape on one CUDA GPU (LoRA and full)"
    )
    parser.add_argument("--pairs", type=int, default=None, help="preference pairs per batch (CPU 2, GPU 4)")
    parser.add_argument(
        "--answer-words", type=int, default=128, help="answer length in words (1 word = 1 token)"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (CPU 2, GPU 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per variant")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="with --gpu: run the GPU recipe on the CPU with the scaled model",
    )
    parser.add_argument("--mode", choices=GPU_MODES, default="lora", help=argparse.SUPPRESS)
    parser.add_argument("--_child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.pairs = args.pairs or (4 if args.gpu else 2)
    args.steps = args.steps or (3 if args.gpu else 2)

    if args._child:
        result = run_variant(args._child, args)
        print(json.dumps(result))
        return 0

    if args.gpu:
        results = {mode: summarise({v: measure(v, args, mode) for v in VARIANTS}) for mode in GPU_MODES}
        if args.json:
            print(json.dumps({"device": _gpu_name(), **results}, indent=2))
        else:
            for mode in GPU_MODES:
                print(
                    table(results[mode], f"{mode} fine-tuning, bf16, gradient checkpointing, {_gpu_name()}")
                )
                print()
        return 0

    result = summarise({v: measure(v, args) for v in VARIANTS})
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            table(
                result,
                f"CPU, {args.threads} threads, {args.pairs} pairs, answers ~{args.answer_words} tokens",
            )
        )
    return 0


def _gpu_name() -> str:
    if "--dry-run" in sys.argv:
        return "CPU dry run of the GPU recipe (scaled model)"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "unknown GPU"


if __name__ == "__main__":
    sys.exit(main())
