"""Students: the teacher with decoder layers removed, initialized from the teacher's weights.

DistilBERT/MiniMA-style: keep a subset of the teacher's decoder layers and copy them, with
the embeddings, final norm and LM head, into a shallower model of the same architecture.
The result is a normal HF folder (config, safetensors, tokenizer, chat template), so the
student shares the teacher's vocabulary by construction and white-box KD applies.

    python -c "from training.student import build_student; \\
        print(build_student('~/.cache/distillery/models/SmolLM2-135M-Instruct', 10, 'students/s10'))"

Any local HF folder can also be the student; ``check_same_tokenizer`` refuses white-box KD
when its tokenizer differs from the teacher's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core.errors import DistillError, NotFoundError

STUDENT_MARKER = "distillery_student.json"

KeepLayers = list[int] | int | float | str


def select_layers(n_layers: int, keep: KeepLayers) -> list[int]:
    """The teacher layer indices a student keeps, sorted.

    ``keep``: explicit indices; an int count (evenly spaced, first and last kept); a fraction
    in (0, 1) of the layers (same spacing); or "every_other" (0, 2, 4, ...).

        >>> select_layers(30, 10)
        [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
        >>> select_layers(6, "every_other")
        [0, 2, 4]
    """
    if isinstance(keep, str):
        if keep != "every_other":
            raise DistillError(f"keep_layers {keep!r}: use 'every_other', a count, a fraction or a list")
        return list(range(0, n_layers, 2))
    if isinstance(keep, (list, tuple)):
        layers = sorted(int(i) for i in keep)
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad or len(set(layers)) != len(layers) or not layers:
            raise DistillError(f"keep_layers {list(keep)}: indices must be distinct and in [0, {n_layers})")
        return layers
    if isinstance(keep, float) and not isinstance(keep, bool):
        if not 0.0 < keep < 1.0:
            raise DistillError(f"keep_layers fraction {keep} must be in (0, 1)")
        keep = max(1, round(n_layers * keep))
    count = int(keep)
    if not 1 <= count <= n_layers:
        raise DistillError(f"keep_layers count {count} must be in [1, {n_layers}]")
    if count == 1:
        return [0]
    return sorted({round(i * (n_layers - 1) / (count - 1)) for i in range(count)})


def _remap_state_dict(state: dict[str, Any], layers: list[int]) -> dict[str, Any]:
    """Keep the chosen decoder layers (renumbered 0..k-1) and every non-layer weight."""
    new_index = {old: new for new, old in enumerate(layers)}
    out = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if "layers" in parts:
            pos = parts.index("layers")
            old = int(parts[pos + 1])
            if old not in new_index:
                continue
            parts[pos + 1] = str(new_index[old])
            key = ".".join(parts)
        out[key] = tensor
    return out


def build_student(
    teacher_path: str | Path,
    keep_layers: KeepLayers = "every_other",
    out_dir: str | Path | None = None,
) -> Path:
    """Save the teacher with only ``keep_layers`` of its decoder layers as a new HF folder.

    Reuses ``out_dir`` when it already holds the same pruning of the same teacher (the
    marker file records both). The folder appears atomically, so an interrupted build
    leaves nothing half-written.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    teacher_path = Path(teacher_path).expanduser()
    if not (teacher_path / "config.json").exists():
        raise NotFoundError(f"teacher model folder {teacher_path} not found (no config.json)")
    config = AutoConfig.from_pretrained(teacher_path)
    text_config = config.get_text_config()
    n_layers = text_config.num_hidden_layers
    layers = select_layers(n_layers, keep_layers)
    out_dir = Path(out_dir) if out_dir else teacher_path.parent / f"{teacher_path.name}-keep{len(layers)}of{n_layers}"
    marker = {"teacher": str(teacher_path.resolve()), "kept_layers": layers, "teacher_layers": n_layers}

    existing = out_dir / STUDENT_MARKER
    if existing.exists() and json.loads(existing.read_text()) == marker:
        return out_dir

    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype="auto")
    text_config.num_hidden_layers = len(layers)
    if getattr(text_config, "layer_types", None):
        text_config.layer_types = [text_config.layer_types[i] for i in layers]
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_config(config, dtype=teacher.dtype)
    missing, unexpected = student.load_state_dict(_remap_state_dict(teacher.state_dict(), layers), strict=False)
    # A tied LM head is not a separate tensor in some state dicts; anything else missing is a bug.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise DistillError(f"pruning {teacher_path} left weights unmatched: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        student.tie_weights()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        student.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(teacher_path).save_pretrained(tmp)
        (tmp / STUDENT_MARKER).write_text(json.dumps(marker, indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _tokenizer(obj: Any):
    if isinstance(obj, (str, Path)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(Path(obj).expanduser())
    return obj


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model")


def tokenizers_differ(student: str | Path, teacher: str | Path) -> str | None:
    """A cheap check at config load, before any model is loaded: which tokenizer files of two
    model folders differ ('embedded' names the embedded model), or None when they agree or
    cannot be compared yet (a folder is missing: ``check_same_tokenizer`` checks at train time)."""
    from core.embedded import EMBEDDED, embedded_model_dir

    folders = [embedded_model_dir() if str(x) == EMBEDDED else Path(x).expanduser() for x in (student, teacher)]
    if not all((f / "config.json").exists() for f in folders):
        return None
    differ = []
    for name in _TOKENIZER_FILES:
        a, b = (f / name for f in folders)
        if a.exists() != b.exists() or (a.exists() and a.read_bytes() != b.read_bytes()):
            differ.append(name)
    return ", ".join(differ) or None


def check_same_tokenizer(student: Any, teacher: Any) -> None:
    """Refuse white-box KD between models whose tokenizers differ (paths or tokenizer objects).

    KD compares the two next-token distributions position by position, which only means
    something when both models split text into the same tokens with the same ids.
    """
    s_tok, t_tok = _tokenizer(student), _tokenizer(teacher)
    s_vocab, t_vocab = s_tok.get_vocab(), t_tok.get_vocab()
    if s_vocab == t_vocab:
        return
    only_s = len(set(s_vocab) - set(t_vocab))
    only_t = len(set(t_vocab) - set(s_vocab))
    moved = sum(1 for tok, i in s_vocab.items() if tok in t_vocab and t_vocab[tok] != i)
    raise DistillError(
        f"student and teacher tokenizers differ (student vocab {len(s_vocab)}, teacher vocab {len(t_vocab)}; "
        f"{only_s} tokens only in the student, {only_t} only in the teacher, {moved} with different ids): "
        "white-box KD (kd/rkl/jsd/seqkd/gkd/onpolicy) needs a shared tokenizer. Use a student pruned from the "
        "teacher (student: prune), SFT on the teacher's data, or TRL's GOLD trainer "
        "(trl.experimental.gold) for cross-tokenizer distillation"
    )
