"""The noun-first trial of ``benchmarks/scene_noun_first.py``: its grammar describes and parses
back every scene with the noun first, both annotator policies leave only true claims, the
package's grammar comes back afterwards, and the grown vocabulary keeps every old id."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rlhfv.scenes.annotator as annotator
import rlhfv.scenes.language as language
from rlhfv.scenes.language import claims_of, describe, facts_of, noun_class, parse_answer, scene_facts
from tests.scenes.strategies import scenes, wrong_scenes
from tests.test_benchmarks import load_benchmark

noun_first = load_benchmark("scene_noun_first")


@settings(max_examples=60, deadline=None)
@given(scene=scenes(), seed=st.integers(0, 2**31), lower=st.booleans())
def test_every_object_sentence_opens_with_its_noun_and_parses_back(scene, seed, lower):
    with noun_first.noun_first_grammar():
        text = describe(scene, random.Random(seed))
        text = text.lower() if lower else text
        assert facts_of(text) == scene_facts(scene)
        for sentence in parse_answer(text):
            if sentence.claims:
                first_word = sentence.text(text).split()[0].strip(",")
                assert noun_class(first_word) == sentence.claims[0].cls


@settings(max_examples=60, deadline=None)
@given(data=st.data(), policy=st.sampled_from(noun_first.ANNOTATORS))
def test_each_policy_leaves_only_true_claims(data, policy):
    scene = data.draw(scenes())
    wrong = data.draw(wrong_scenes(scene))
    with noun_first.noun_first_grammar(policy):
        answer = describe(wrong, random.Random(data.draw(st.integers(0, 2**31))))
        corrected = annotator.annotate(answer, scene, image="scene.png", question="q").corrected
        assert facts_of(corrected) <= scene_facts(scene)
        kept = [c.cls for c in claims_of(corrected)]
        present = [c.cls for c in claims_of(answer) if scene.get(c.cls) is not None]
        if policy == "delete":  # nothing renamed: exactly the present objects' sentences stay
            assert kept == present
        else:  # hallucinated sentences are renamed into objects the answer left out, while any are left
            named = {c.cls for c in claims_of(answer)}
            unnamed = [o for o in scene.objects if o.cls not in named]
            hallucinated = len(claims_of(answer)) - len(present)
            assert len(kept) == len(present) + min(hallucinated, len(unnamed))
            assert set(present) <= set(kept)


def test_the_package_grammar_comes_back_even_after_an_error():
    shipped = (language.TEMPLATES, language._TEMPLATE_RES, language.VERBS, annotator.correction_edits)
    with pytest.raises(RuntimeError), noun_first.noun_first_grammar("delete"):
        assert language.TEMPLATES[0].startswith("{O}")
        assert annotator.correction_edits is noun_first.deleting_edits
        raise RuntimeError
    assert (language.TEMPLATES, language._TEMPLATE_RES, language.VERBS, annotator.correction_edits) == shipped
    assert "one" not in language.VERBS
    with (
        pytest.raises(ValueError, match="annotator_policy must be one of"),
        noun_first.noun_first_grammar("hedge"),
    ):
        pass


def test_the_new_word_gets_the_next_id_and_old_ids_keep_their_embeddings(tmp_path):
    from rlhfv.scenes.model import CHECKPOINT_DIR, load_scene_model

    old_model, old_processor = load_scene_model(CHECKPOINT_DIR)
    model, processor = noun_first.with_new_word(CHECKPOINT_DIR, tmp_path / "grown")
    old_vocab, vocab = old_processor.tokenizer.get_vocab(), processor.tokenizer.get_vocab()
    assert "ones" not in old_vocab
    assert vocab["ones"] == max(old_vocab.values()) + 1
    assert {w: vocab[w] for w in old_vocab} == old_vocab
    ids = processor.tokenizer("two blue ones", add_special_tokens=False)["input_ids"]
    assert ids[-1] == vocab["ones"] and processor.tokenizer.unk_token_id not in ids
    old_rows = old_model.get_input_embeddings().weight
    rows = model.get_input_embeddings().weight
    assert rows.shape[0] == vocab["ones"] + 1
    assert torch.equal(rows[: old_rows.shape[0]], old_rows)
    with pytest.raises(ValueError, match="already in the vocabulary"):
        noun_first.with_new_word(tmp_path / "grown", tmp_path / "again")
