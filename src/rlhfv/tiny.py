"""Tiny, real Hugging Face vision-language models, built locally from configs.

Nothing is downloaded: the tokenizer is a word-level ``tokenizers`` model over a given
vocabulary, the image processor is configured for small images, and the model is the
real transformers class (``LlavaForConditionalGeneration``,
``LlavaNextForConditionalGeneration``, ``Qwen2VLForConditionalGeneration``,
``Idefics3ForConditionalGeneration``) with randomly initialised weights. Tests,
benchmarks and the scene world use them; ``save_pretrained`` makes them loadable by
``AutoModelForImageTextToText`` / ``AutoProcessor`` exactly like a hub checkpoint.

>>> model, processor = build_tiny("llava")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

ARCHITECTURES: tuple[str, ...] = ("llava", "llava_next", "qwen2_vl", "idefics3")

# Words a test can write sentences with: function words, COCO-ish objects, colours,
# counts, positions. Anything else becomes <unk> (still a valid token).
DEFAULT_WORDS: tuple[str, ...] = tuple(
    """
    a an the this that these those there here is are was were be been has have had it its
    of in on at to from with without and or but not no yes by for as near next behind under
    above below beside between left right top bottom middle center front back side corner
    image picture photo scene shows show see can i you we they he she describe detail
    what where which how many much color colour size shape kind some all each both one two
    three four five six seven eight nine ten several few many pair group lot large small big
    little tall short long round square red green blue yellow orange purple pink brown black
    white gray grey dark light bright person man woman child people boy girl dog cat horse
    sheep cow bird bear elephant zebra giraffe car bus truck train bicycle motorcycle
    airplane boat bench chair couch bed table dining toilet tv laptop mouse keyboard phone
    book clock vase cup bottle bowl fork knife spoon banana apple orange sandwich pizza cake
    donut hot dog broccoli carrot umbrella bag backpack tie suitcase kite skateboard surfboard
    ball frisbee tennis racket baseball bat glove traffic light sign stop fire hydrant
    building tree sky grass road street water wall floor window door plate food room
    sitting standing walking holding wearing looking playing eating lying parked flying
    user assistant system question answer please briefly
    """.split()
)
PUNCTUATION: tuple[str, ...] = (".", ",", "?", "!", ":", ";", "'", '"', "-", "(", ")")

# A neutral chat template: "user: <image> text\nassistant: ...". The image placeholder
# string differs per architecture (filled in by build_tiny).
_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}IMAGE_PLACEHOLDER {% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

_SPECIAL = {
    "llava": ["<image>"],
    "llava_next": ["<image>"],
    "qwen2_vl": ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"],
    "idefics3": ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
    + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
}
_IMAGE_PLACEHOLDER = {
    "llava": "<image>",
    "llava_next": "<image>",
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "idefics3": "<image>",
}


def tiny_chat_template(arch: str = "llava") -> str:
    """The chat template of ``build_tiny(arch)``'s processor: ``role: text`` lines, the image as ``arch``'s token(s)."""
    return _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", _IMAGE_PLACEHOLDER[arch])


def word_level_tokenizer(
    words: Iterable[str] = DEFAULT_WORDS,
    special_tokens: Sequence[str] = (),
    chat_template: str | None = None,
):
    """A ``PreTrainedTokenizerFast`` with one id per word, lower-cased, punctuation split off.

    Ids: 0 <pad>, 1 <unk>, 2 <s>, 3 </s>, then ``special_tokens``, then the words.
    Offsets (``return_offsets_mapping``) point into the original text.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = ["<pad>", "<unk>", "<s>", "</s>", *special_tokens]
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(base)}
    for word in [*words, *PUNCTUATION]:
        word = word.lower()
        if word not in vocab:
            vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    # WordPiece's decoder joins words with spaces and removes the space before punctuation.
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    if special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _text_config(vocab_size: int, hidden: int, layers: int, pad_id: int, **extra):
    return dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=pad_id,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
        **extra,
    )


def build_tiny(
    arch: str = "llava",
    words: Iterable[str] = DEFAULT_WORDS,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    image_size: int = 32,
    seed: int = 0,
    patch_size: int | None = None,
):
    """Return ``(model, processor)`` for a tiny randomly initialised ``arch`` model.

    ``arch`` is one of ``ARCHITECTURES``. ``image_size`` is the vision tower's input side
    (a multiple of 16). ``patch_size`` overrides the vision tower's patch side (LLaVA only;
    default 8, so ``(image_size / patch_size) ** 2`` image tokens). The model is in eval
    mode, fp32, on the CPU.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {ARCHITECTURES}")
    chat_template = tiny_chat_template(arch)
    tokenizer = word_level_tokenizer(words, _SPECIAL[arch], chat_template)
    torch.manual_seed(seed)
    if patch_size is None:
        model, processor = _BUILDERS[arch](tokenizer, chat_template, hidden_size, num_layers, image_size)
    elif arch == "llava":
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"patch_size must divide image_size {image_size}, got {patch_size}")
        model, processor = _build_llava(
            tokenizer, chat_template, hidden_size, num_layers, image_size, patch_size
        )
    else:
        raise ValueError(f"patch_size is only supported for 'llava', not {arch!r}")
    return model.eval(), processor


def _vision(hidden: int) -> dict:
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4)


def _build_llava(tokenizer, chat_template, hidden, layers, image_size, patch=8):
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=chat_template,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=image_size, patch_size=patch, **_vision(hidden)),
        text_config=LlamaConfig(**_text_config(len(tokenizer), hidden, layers, tokenizer.pad_token_id)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    return LlavaForConditionalGeneration(config), processor


def _build_llava_next(tokenizer, chat_template, hidden, layers, image_size):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    patch = 8
    pinpoints = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size]]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=image_size, patch_size=patch, **_vision(hidden)),
        text_config=LlamaConfig(**_text_config(len(tokenizer), hidden, layers, tokenizer.pad_token_id)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )
    return LlavaNextForConditionalGeneration(config), processor


def _build_qwen2_vl(tokenizer, chat_template, hidden, layers, image_size):
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl import Qwen2VLVideoProcessor

    patch, merge = 4, 2
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessor(
        patch_size=patch, merge_size=merge, temporal_patch_size=2, min_pixels=pixels, max_pixels=pixels
    )
    video_processor = Qwen2VLVideoProcessor(
        patch_size=patch, merge_size=merge, temporal_patch_size=2, min_pixels=pixels, max_pixels=pixels
    )
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template,
    )
    head_dim = hidden // 4
    text = _text_config(len(tokenizer), hidden, layers, tokenizer.pad_token_id)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        # multimodal rotary sections (temporal, height, width) over head_dim / 2 frequencies
        "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8],
    }
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(
            depth=2,
            embed_dim=hidden,
            hidden_size=hidden,
            num_heads=4,
            mlp_ratio=2,
            patch_size=patch,
            spatial_merge_size=merge,
            temporal_patch_size=2,
            in_channels=3,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    return Qwen2VLForConditionalGeneration(config), processor


def _build_idefics3(tokenizer, chat_template, hidden, layers, image_size):
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    patch, scale = 8, 2
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
        do_image_splitting=False,
    )
    image_seq_len = (image_size // patch) ** 2 // scale**2
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=chat_template,
    )
    config = Idefics3Config(
        vision_config=dict(image_size=image_size, patch_size=patch, **_vision(hidden)),
        text_config=_text_config(len(tokenizer), hidden, layers, tokenizer.pad_token_id),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Idefics3ForConditionalGeneration(config), processor


_BUILDERS = {
    "llava": _build_llava,
    "llava_next": _build_llava_next,
    "qwen2_vl": _build_qwen2_vl,
    "idefics3": _build_idefics3,
}


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct lower-cased words of ``texts``, in first-seen order (a vocabulary)."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in re.findall(r"[\w]+", text.lower()):
            seen.setdefault(word, None)
    return list(seen)
