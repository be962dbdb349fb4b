"""An in-process Hugging Face model as a teacher, with batched generation.

    teacher = TransformersTeacher()                         # the embedded SmolLM2-135M-Instruct
    teacher = TransformersTeacher("/models/my-teacher", device="cuda", batch_size=64)
    done = teacher.generate([ChatRequest.chat("Say hi", max_tokens=16, temperature=0)])
    model, tokenizer = teacher.load()                       # for white-box distillation

Requests are grouped by sampling parameters (one ``generate`` call takes one set),
sorted by prompt length so a batch carries little padding, left-padded, and generated in
batches that fit memory. Sampling follows the OpenAI API: temperature 0 is greedy, an
unset temperature means 1.0, ``top_p`` is nucleus sampling (no top-k cut), ``stop``
strings end a sequence and are cut from its text, ``seed`` seeds torch before the batch
(same seed, same batch -> same text), ``presence_penalty`` and ``frequency_penalty``
lower the logits of tokens already generated as the API does (``penalties.py``).
``logprobs=k`` returns the model's own log-probs (before penalties, temperature and
top-p) of each generated token and its top k alternatives.

Generation runs in a worker thread (``asyncio.to_thread``), one batch at a time, so the
event loop stays free; results are yielded per batch, so the ledger records them as
each batch finishes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from generators.teachers.base import ChatRequest, Completion, SamplingParams, Teacher, TokenLogprob
from core.embedded import EMBEDDED_MODEL_NAME, ensure_embedded_teacher

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
CPU_MAX_BATCH = 64


def _available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


class TransformersTeacher(Teacher):
    backend = "transformers"

    def __init__(self, model_path: str | Path | None = None, *, model: str | None = None,
                 device: str = "auto", dtype: str = "auto", batch_size: int | None = None,
                 num_threads: int | None = None, defaults: SamplingParams | None = None) -> None:
        name = model or (Path(model_path).name if model_path else EMBEDDED_MODEL_NAME)
        super().__init__(name, defaults=defaults)
        self._model_path = Path(model_path) if model_path else None
        self.device_spec = device
        self.dtype_spec = dtype
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._hf_model: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersTeacher(model={self.model!r}, path={str(self._model_path)!r})"

    # -- the model ---------------------------------------------------------------------------
    @property
    def model_path(self) -> Path:
        """The model folder (the embedded teacher is converted on first access)."""
        if self._model_path is None:
            self._model_path = ensure_embedded_teacher()
        return self._model_path

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, tokenizer)``; the tokenizer pads on the left."""
        with self._load_lock:
            if self._hf_model is None:
                import torch
                import transformers

                self._set_threads(torch)
                device = self.device_spec
                if device == "auto":
                    device = "cuda" if torch.cuda.is_available() else "cpu"
                dtype = self.dtype_spec
                if dtype == "auto":
                    dtype = "float32" if device == "cpu" else "bfloat16"
                path = str(self.model_path)
                tokenizer = transformers.AutoTokenizer.from_pretrained(path)
                tokenizer.padding_side = "left"
                if tokenizer.pad_token is None:
                    tokenizer.pad_token = tokenizer.eos_token
                model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
                model.to(device).eval()
                self._tokenizer, self._hf_model = tokenizer, model
                log.info("loaded %s on %s (%s)", path, device, dtype)
        return self._hf_model, self._tokenizer

    @property
    def hf_model(self) -> Any:
        return self.load()[0]

    @property
    def tokenizer(self) -> Any:
        return self.load()[1]

    def _set_threads(self, torch: Any) -> None:
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
            return
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        if torch.get_num_threads() > cores:
            torch.set_num_threads(cores)

    def auto_batch_size(self, tokens_per_sequence: int) -> int:
        """As many sequences as a quarter of free memory holds in KV cache (capped on CPU)."""
        if self.batch_size:
            return self.batch_size
        import torch

        model, _ = self.load()
        cfg = model.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        per_token = 2 * cfg.num_hidden_layers * heads * head_dim * model.dtype.itemsize
        if model.device.type == "cuda":
            free = torch.cuda.mem_get_info(model.device)[0]
            cap = 512
        else:
            free, cap = _available_memory_bytes(), CPU_MAX_BATCH
        fits = int(free * 0.25 // max(1, per_token * tokens_per_sequence * 3))  # x3: logits, activations
        return max(1, min(cap, fits))

    # -- generation ----------------------------------------------------------------------------
    def _render(self, request: ChatRequest) -> str:
        if request.messages is None:
            return request.prompt or ""
        return self.tokenizer.apply_chat_template([dict(m) for m in request.messages],
                                                  add_generation_prompt=True, tokenize=False)

    def _plan(self, requests: list[ChatRequest]) -> list[tuple[SamplingParams, list[tuple[int, str]]]]:
        """Batches of (index, rendered prompt) sharing sampling params, similar lengths together."""
        groups: dict[SamplingParams, list[tuple[int, str]]] = {}
        for i, request in enumerate(requests):
            params = request.params.merged_over(self.defaults)
            groups.setdefault(params, []).append((i, self._render(request)))
        batches = []
        for params, items in groups.items():
            items.sort(key=lambda item: len(item[1]))
            longest = max(len(text) for _, text in items) // 3 + 1  # ~chars per token, generous
            size = self.auto_batch_size(longest + (params.max_tokens or DEFAULT_MAX_TOKENS))
            batches += [(params, items[k:k + size]) for k in range(0, len(items), size)]
        return batches

    def _generate_batch(self, params: SamplingParams, items: list[tuple[int, str]],
                        requests: list[ChatRequest]) -> list[tuple[int, Completion]]:
        import torch

        model, tok = self.load()
        start = time.perf_counter()
        enc = tok([text for _, text in items], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(model.device)
        max_new = params.max_tokens or DEFAULT_MAX_TOKENS
        temperature = 1.0 if params.temperature is None else params.temperature
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new, pad_token_id=tok.pad_token_id,
                                      return_dict_in_generate=True, output_logits=params.logprobs is not None)
        if temperature == 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=temperature, top_p=params.top_p or 1.0, top_k=0)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        if params.presence_penalty or params.frequency_penalty:
            from transformers import LogitsProcessorList

            from generators.teachers.penalties import OpenAIPenalties

            # Left padding: every row's prompt ends at the same column, where generation starts.
            penalties = OpenAIPenalties(enc["input_ids"].shape[1], presence=params.presence_penalty or 0.0,
                                        frequency=params.frequency_penalty or 0.0)
            kwargs.update(logits_processor=LogitsProcessorList([penalties]))
        with self._run_lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = model.generate(**enc, **kwargs)
        latency = time.perf_counter() - start
        new = out.sequences[:, enc["input_ids"].shape[1]:].tolist()
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id, tok.pad_token_id}
        eos_ids.discard(None)
        results = []
        for row, (index, _) in enumerate(items):
            ids = new[row]
            n = next((k for k, t in enumerate(ids) if t in eos_ids), None)
            finish = "stop" if n is not None else "length"
            n = len(ids) if n is None else n
            text = tok.decode(ids[:n], skip_special_tokens=True)
            if params.stop:
                cut = min((p for p in (text.find(s) for s in params.stop) if p >= 0), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                elif finish == "length" and n < max_new:
                    finish = "stop"
            logprobs = self._logprobs(out.logits, row, ids[:n], params.logprobs) if params.logprobs is not None else None
            request = requests[index]
            ok = bool(text.strip())
            results.append((index, Completion(
                key=self.key(request), ok=ok, text=text if ok else None, finish_reason=finish,
                error=None if ok else "empty content",
                prompt_tokens=int(enc["attention_mask"][row].sum()), completion_tokens=n,
                latency_s=latency, logprobs=logprobs, model=self.model, tag=request.tag)))
        return results

    def _logprobs(self, logits: Any, row: int, ids: list[int], k: int) -> list[TokenLogprob]:
        import torch

        tok = self._tokenizer
        out = []
        for step, token_id in enumerate(ids):
            lp = torch.log_softmax(logits[step][row].float(), dim=-1)
            top = {}
            if k:
                values, indices = lp.topk(k)
                top = {tok.decode([i]): v for v, i in zip(values.tolist(), indices.tolist())}
            out.append(TokenLogprob(token=tok.decode([token_id]), logprob=float(lp[token_id]), top=top))
        return out

    async def astream(self, requests: list[ChatRequest]) -> AsyncIterator[tuple[int, Completion]]:
        requests = list(requests)
        if not requests:
            return
        await asyncio.to_thread(self.load)
        for params, items in await asyncio.to_thread(self._plan, requests):
            try:
                done = await asyncio.to_thread(self._generate_batch, params, items, requests)
            except Exception as err:  # e.g. out of memory: fail this batch, keep going
                log.warning("generation failed for a batch of %d: %s", len(items), err)
                done = [(i, Completion(key=self.key(requests[i]), ok=False, model=self.model,
                                       error=f"generation error: {type(err).__name__}", tag=requests[i].tag))
                        for i, _ in items]
            for item in done:
                yield item

    async def agenerate(self, requests: list[ChatRequest]) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        async for i, done in self.astream(list(requests)):
            out[i] = done
        return out  # type: ignore[return-value]
