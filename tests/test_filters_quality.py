"""Quality heuristics, exact dedup, Decision and the filter configs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from filters.base import Decision, to_record
from filters.config import FilterConfig, QualityConfig
from filters.exact import ExactDedup, exact_key
from filters.quality import (
    QualityFilter,
    check_boilerplate,
    check_empty,
    check_judge_score,
    check_length,
    check_non_text,
    check_refusal,
    check_repetition,
    repeated_ngram_ratio,
)
from storage.records import Instruction

# -- Decision ---------------------------------------------------------------------------


def test_decision_invariants_and_record():
    assert Decision(True).reason == "" and bool(Decision.keep(0.3))
    assert not Decision.drop("refusal")
    with pytest.raises(ValueError):
        Decision(False)  # a drop needs a reason
    with pytest.raises(ValueError):
        Decision(True, None, "refusal")
    rec = to_record(Decision.drop("too_similar", 0.9), item_id="i1", filter="rouge_novelty", item_kind="instruction")
    assert (rec.item_id, rec.filter, rec.kept, rec.score, rec.reason) == ("i1", "rouge_novelty", False, 0.9, "too_similar")


# -- exact ------------------------------------------------------------------------------


def test_exact_dedup_normalizes_and_matches_store_keys():
    dedup = ExactDedup([exact_key("Name three  primary colours.")])
    for variant in ("name three primary colours.", "  NAME three\nprimary colours.  ", "Name three primary colours."):
        assert dedup.check(exact_key(variant)).reason == "exact_duplicate"
    assert dedup.check(exact_key("Name three primary colors.")).kept  # a different spelling is new content
    # Keys are the store's: an instruction id already stored is a known key.
    known = ExactDedup([Instruction(text="Say hi.", input="to Bob", method="seed").id])
    assert not known.check(exact_key("say  hi.", "To Bob")).kept
    assert known.check(exact_key("say hi.")).kept
    assert exact_key("é") == exact_key("e\u0301")  # NFC: composed == decomposed


def test_exact_dedup_incremental_and_edge_cases():
    dedup = ExactDedup()
    dedup.add_keys([exact_key("")])
    assert exact_key("") in dedup and len(dedup) == 1
    assert not dedup.check(exact_key("   ")).kept  # all-whitespace normalizes to the empty text
    long_text = "word " * 100_000
    assert dedup.check(exact_key(long_text)).kept
    dedup.add_keys([exact_key(long_text)])
    assert not dedup.check(exact_key(long_text + " ")).kept
    dedup.add_keys(["abc"])
    assert "abc" in dedup


# -- quality checks ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None])
def test_empty(text):
    assert check_empty(text).reason == "empty"
    assert QualityFilter().check(text).reason == "empty"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I’m sorry, but that is not possible.",  # curly apostrophe
        "I cannot provide that information.",
        "I can't do that.",
        "**I am unable to** comply.",
        "Unfortunately, I cannot answer.",
        "I apologize, but I won't.",
    ],
)
def test_refusals(text):
    assert check_refusal(text).reason == "refusal"


@pytest.mark.parametrize(
    "text",
    [
        "Paris is the capital of France.",
        "The function returns None when I cannot parse the input.",  # not at the start
        "Sorry to hear that! Here are some tips.",
    ],
)
def test_not_refusals(text):
    assert check_refusal(text).kept


def test_boilerplate_anywhere():
    assert check_boilerplate("Sure. As an AI language model, I think yes.").reason == "boilerplate"
    assert check_boilerplate("as a large language model I have no views").reason == "boilerplate"
    assert check_boilerplate("I don't have personal opinions, but ...").reason == "boilerplate"
    assert check_boilerplate("The model was trained on AI language data.").kept


def test_repetition():
    assert repeated_ngram_ratio("a b c a b c a b c", 3) == pytest.approx(4 / 7)
    assert repeated_ngram_ratio("one two", 3) == 0.0
    d = check_repetition("buy now " * 30, max_ratio=0.3)
    assert d.reason == "repetitive" and d.score > 0.9
    assert check_repetition("The quick brown fox jumps over the lazy dog.").kept


def test_non_text_and_length():
    assert check_non_text("$$$ 1234 5678 #### %%%% !!!!").reason == "non_text"
    assert check_non_text("42").kept  # short answers are not judged by their letter share
    assert check_non_text("Ответ: сорок два, потому что так.").kept  # letters of any script
    assert check_length("one two", min_words=3).reason == "too_short"
    assert check_length("one two three four", max_words=3).reason == "too_long"
    assert check_length("abc", max_chars=2).reason == "too_long"
    assert check_length("one two three", min_words=3, max_words=3) == Decision.keep(3.0)


def test_judge_score():
    assert check_judge_score(3.0, min_score=4.0) == Decision.drop("low_judge_score", 3.0)
    assert check_judge_score(4.0, min_score=4.0).kept
    assert check_judge_score(None, min_score=4.0).kept
    assert check_judge_score(None, min_score=4.0, require=True).reason == "unjudged"


def test_quality_filter_order_and_config():
    f = QualityFilter(QualityConfig(min_words=3, min_judge_score=5, extra_boilerplate_patterns=[r"\bcertainly!"]))
    assert f.check("As an AI language model, no.").reason == "boilerplate"
    assert f.check("I'm sorry, but as an AI language model, no.").reason == "refusal"  # refusal comes first
    assert f.check("Certainly! Here it is.").reason == "boilerplate"
    assert f.check("Too short").reason == "too_short"
    assert f.check("A perfectly fine answer here.", judge_score=2).reason == "low_judge_score"
    assert f.check("A perfectly fine answer here.", judge_score=7) == Decision.keep()
    names = [name for name, _ in f.checks("A fine answer with words.", judge_score=7)]
    assert names == ["empty", "refusal", "boilerplate", "length", "repetition", "non_text", "judge"]
    off = QualityFilter(QualityConfig(refusal=False, boilerplate=False, max_repeated_ngram_ratio=None, min_alpha_ratio=None))
    assert off.check("I'm sorry, but as an AI language model " + "$" * 40).kept


def test_configs_validate_and_document_every_field():
    with pytest.raises(ValidationError):
        QualityConfig(min_words=10, max_words=5)
    with pytest.raises(ValidationError):
        FilterConfig(unknown=True)
    cfg = FilterConfig.model_validate({"rouge": {"threshold": 0.7}, "minhash": None})
    assert cfg.rouge.threshold == 0.7 and cfg.minhash is None and cfg.exact
    for model in (FilterConfig, QualityConfig, type(cfg.rouge), type(FilterConfig().minhash)):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
