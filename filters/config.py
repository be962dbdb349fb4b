"""Typed, documented configuration of every filter, validated once at load time.

The curate flow takes a :class:`FilterConfig` (from YAML, the CLI or the Prefect UI's
parameter form) and builds the filters from it; a section set to None turns that
filter off.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RougeConfig(_Config):
    """ROUGE-L novelty (Self-Instruct): drop texts too similar to the pool."""

    threshold: float = Field(
        0.7, ge=0.0, le=1.0, description="Drop a text whose max ROUGE-L F1 against the pool is above this."
    )
    use_stemmer: bool = Field(
        False, description="Porter-stem tokens longer than 3 characters, as rouge_score's use_stemmer does."
    )


class MinHashConfig(_Config):
    """MinHash LSH near-duplicates over word n-grams."""

    threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="Jaccard similarity of word n-gram sets at or above which a text is a near-duplicate."
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash signature length (permutations).")
    ngram: int = Field(3, ge=1, le=32, description="Words per shingle.")
    seed: int = Field(0, ge=0, description="Seed of the hash permutations (part of the stored signature config).")
    bands: int | None = Field(
        None, ge=1, description="LSH bands (rows = num_perm // bands); None picks them for the threshold."
    )

    @model_validator(mode="after")
    def _bands_fit(self) -> "MinHashConfig":
        if self.bands is not None and self.bands > self.num_perm:
            raise ValueError(f"bands ({self.bands}) cannot exceed num_perm ({self.num_perm})")
        return self


class QualityConfig(_Config):
    """Heuristic quality checks, applied in this order; the first failure drops the text."""

    refusal: bool = Field(True, description="Drop refusals ('I'm sorry, but', 'I cannot', ...) with reason 'refusal'.")
    boilerplate: bool = Field(
        True, description="Drop AI boilerplate ('As an AI language model', ...) with reason 'boilerplate'."
    )
    extra_refusal_patterns: list[str] = Field(
        default_factory=list, description="More regular expressions (case-insensitive) matched at the start of the text."
    )
    extra_boilerplate_patterns: list[str] = Field(
        default_factory=list, description="More regular expressions (case-insensitive) matched anywhere in the text."
    )
    min_words: int | None = Field(None, ge=0, description="Drop texts with fewer words ('too_short'); None: no bound.")
    max_words: int | None = Field(None, ge=1, description="Drop texts with more words ('too_long'); None: no bound.")
    min_chars: int | None = Field(None, ge=0, description="Drop texts with fewer characters ('too_short'); None: no bound.")
    max_chars: int | None = Field(None, ge=1, description="Drop texts with more characters ('too_long'); None: no bound.")
    max_repeated_ngram_ratio: float | None = Field(
        0.3, ge=0.0, le=1.0, description="Drop texts whose share of repeated word n-grams is above this ('repetitive'); None: off."
    )
    repeated_ngram_size: int = Field(3, ge=1, description="n of the word n-grams counted for repetition.")
    min_alpha_ratio: float | None = Field(
        0.3, ge=0.0, le=1.0, description="Drop texts whose share of letters among non-space characters is below this ('non_text'); None: off."
    )
    min_judge_score: float | None = Field(
        None, description="Drop items whose judge score is below this ('low_judge_score'); None: off."
    )
    require_judge_score: bool = Field(
        False, description="With min_judge_score set, drop items that have no judge score ('unjudged')."
    )

    @model_validator(mode="after")
    def _bounds_ordered(self) -> "QualityConfig":
        for lo, hi in (("min_words", "max_words"), ("min_chars", "max_chars")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a}) is greater than {hi} ({b})")
        return self


class FilterConfig(_Config):
    """Which filters curation applies, and how. A section set to None is off."""

    exact: bool = Field(True, description="Drop exact duplicates after normalization (whitespace, Unicode, case).")
    quality: QualityConfig | None = Field(default_factory=QualityConfig, description="Quality heuristics.")
    minhash: MinHashConfig | None = Field(
        default_factory=MinHashConfig, description="MinHash LSH near-duplicate removal against the whole store."
    )
    rouge: RougeConfig | None = Field(
        None, description="ROUGE-L novelty against the pool (Self-Instruct's filter; usually for instructions)."
    )
