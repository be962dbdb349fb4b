"""Self-Instruct (Wang et al. 2022), and Alpaca's variant of it (Taori et al. 2023).

The teacher bootstraps new tasks from a few human-written seed tasks:

1. **Generate instructions.** A prompt lists 8 demonstrations (6 seed tasks and 2 tasks
   generated earlier, fewer machine ones while the pool is small; shuffled) as a numbered
   list ending in "9."; the teacher continues the list (temperature 0.7, top_p 0.5,
   presence penalty 2, at most 1024 tokens, stopping at a blank line or item 16).
   A response cut off by the token limit is dropped whole.
2. **Filter** each parsed item, in this order, recording why it was dropped:
   4-150 words; no blacklisted word (image, graph, file, map, draw, plot, go to, ...; whole
   words, any case); does not start with "Write a program"; does not start with punctuation
   or a non-ASCII character; ROUGE-L <= 0.7 against every seed and every kept task.
   Accepted tasks join the pool at once, so later items in the same batch are compared
   with them too.
3. **Identify classification tasks** with a few-shot Yes/No prompt at temperature 0.
4. **Generate instances** (temperature 0, presence penalty 1.5, at most 300 tokens for a
   classification task and 350 otherwise): output first for classification tasks (a
   class label, then an input for it, so labels stay balanced), input first otherwise;
   drop instances whose input equals the output, whose output is empty, or with a field
   ending in ":"; a task whose instances give one input two different outputs is dropped
   whole; at most 5 instances per task.

The Alpaca variant (``method="alpaca"``) shows 3 seed tasks with their input and output
in a prompt that asks for a list of 20 tasks, and stops the teacher when item 20 begins,
as the reference does: 16 new tasks a request (items 4-19), each generated together with
its input (``<noinput>`` when there is none) and output, so no instance step; its
blacklist adds video, audio, music, flowchart and diagram, and a response cut off by
length loses only its last task.

Self-Instruct was designed for base models continuing a text (``request_format=
"completion"``, the default); ``request_format="chat"`` sends the list as a chat message
asking to continue it, for instruction-tuned teachers.

A flow runs it in batches (``SelfInstructRunner``), keeping the pool between batches::

    seeds = load_seed_tasks()                           # storage/seeds.py
    config = SelfInstructConfig(request_format="chat")
    state = SelfInstructState.create(seeds, config)
    rng = random.Random(0)
    while state.accepted < 100:
        step = await aself_instruct_step(teacher, state, config, rng=rng, batch_size=8)
        store.ingest(step.records)          # the flow persists; this module never opens the database

Resuming: given the same seeds and rng seed, the steps are deterministic functions of the
teacher's answers. Re-running an interrupted run from the start through the ledgered
teacher therefore replays every request already paid for from the ledger (free, same
answers, same pool) and pays only for new work; content keys make the re-ingest a no-op.
(Alternatively ``SelfInstructState.create(seeds, config, existing=stored_instructions)``
continues from a stored pool with fresh prompts.)
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import InputError
from filters import rouge
from filters.base import Decision, to_record
from filters.rouge import RougeNovelty
from generators.common import Batch, Counts, MethodResult, make_request, params_of, rng_for
from generators.teachers.base import ChatRequest, Completion, Teacher
from generators.templates import load_template
from storage.records import FilterDecision, Instruction, Sample
from storage.seeds import SeedInstance, SeedTask, seed_tasks

#: Self-Instruct's keyword blacklist: tasks a language model cannot do in text.
BLACKLIST: tuple[str, ...] = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
    "map", "maps", "draw", "plot", "go to",
)
#: Words Alpaca adds to it.
ALPACA_EXTRA_BLACKLIST: tuple[str, ...] = ("video", "audio", "music", "flowchart", "diagram")

# Filter names as stored in filter_decisions.filter.
F_LENGTH = "self_instruct.length"
F_BLACKLIST = "self_instruct.blacklist"
F_PROGRAM = "self_instruct.program"
F_START = "self_instruct.start"
F_ROUGE = rouge.NAME
F_OUTPUT = "self_instruct.output"  # Alpaca: a generated task with an empty output
F_INSTANCE = "self_instruct.instance"  # one instance of a task
F_INSTANCES = "self_instruct.instances"  # a task's instances as a whole

NOINPUT = "<noinput>"


# --------------------------------------------------------------------------- config

_VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "self_instruct": {},  # the field defaults below
    "alpaca": {
        "num_seed_demos": 3, "num_machine_demos": 0, "list_length": 19, "temperature": 1.0, "top_p": 1.0,
        "presence_penalty": 0.0, "max_tokens": 3072, "blacklist": BLACKLIST + ALPACA_EXTRA_BLACKLIST,
    },
}


class SelfInstructConfig(BaseModel):
    """Knobs of Self-Instruct. Defaults are the paper's; ``method='alpaca'`` switches every
    field you do not set to Alpaca's values (3 seed demos, list to item 19, temperature 1.0,
    top_p 1.0, no presence penalty, 3072 tokens, extended blacklist)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["self_instruct", "alpaca"] = Field(
        "self_instruct", description="'self_instruct' (instructions, then instances) or 'alpaca' "
        "(instruction, input and output generated together; no instance step).")
    request_format: Literal["completion", "chat"] = Field(
        "completion", description="'completion': the teacher continues the numbered list as text "
        "(the paper, for base models); 'chat': the list is sent as a chat message asking to continue it.")
    system_prompt: str | None = Field(None, description="Optional system prompt for every request.")
    num_seed_demos: int = Field(6, ge=1, description="Seed tasks shown per prompt (Alpaca: 3).")
    num_machine_demos: int = Field(2, ge=0, description="Generated tasks shown per prompt, when the pool "
                                   "has them; seed tasks fill the gap while it is smaller (Alpaca: 0).")
    list_length: int = Field(15, ge=2, description="Number of the list's last item: generation stops when item "
                             "list_length + 1 begins, so a request yields at most list_length minus the number of "
                             "demos new tasks. Self-Instruct 15 (8 demos, stop at '16': 7 new tasks); Alpaca 19 "
                             "(3 demos, stop at '20': 16 new tasks; like the reference's, its prompt announces a "
                             "list of list_length + 1 = 20).")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature for task generation (Alpaca: 1.0).")
    top_p: float = Field(0.5, gt=0, le=1, description="Nucleus mass for task generation (Alpaca: 1.0).")
    presence_penalty: float = Field(2.0, ge=-2, le=2, description="Presence penalty for task generation (Alpaca: 0).")
    max_tokens: int = Field(1024, ge=1, description="Token limit of a task-generation response (Alpaca: 3072).")
    stop: list[str] | None = Field(None, description="Stop sequences; None = the variant's own: a blank line "
                                   "and the item after the list (completion), the item after the list (chat).")
    min_words: int = Field(4, ge=0, description="Fewest words a kept instruction has; shorter ones are dropped "
                           "('too_short'). The reference drops 3 words or fewer, hence 4.")
    max_words: int = Field(150, ge=1, description="Most words a kept instruction has; longer ones are dropped "
                           "('too_long').")
    blacklist: list[str] = Field(default_factory=lambda: list(BLACKLIST), description="Drop instructions "
                                 "holding one of these words or phrases (whole words, any case; 'blacklisted_word').")
    rouge_threshold: float = Field(0.7, ge=0, le=1, description="Drop instructions whose ROUGE-L F1 (no "
                                   "stemmer) against a seed or kept task is above this ('too_similar').")
    identify_classification: bool = Field(True, description="Ask the teacher whether each new task is a "
                                          "classification task (few-shot, temperature 0).")
    generate_instances: bool = Field(True, description="Generate input/output instances for each new task.")
    max_instances: int = Field(5, ge=1, description="Keep at most this many instances per task.")
    instance_temperature: float = Field(0.0, ge=0, le=2, description="Temperature for instance generation.")
    instance_presence_penalty: float = Field(1.5, ge=-2, le=2, description="Presence penalty for instance "
                                             "generation (the reference: 1.5).")
    instance_max_tokens: int = Field(350, ge=1, description="Token limit of an instance-generation response "
                                     "for a task that is not classification (input first).")
    instance_max_tokens_classification: int = Field(
        300, ge=1, description="Token limit of an instance-generation response for a classification task "
        "(output first). The reference gives it 50 tokens less because its prompt is longer.")

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            variant = data.get("method", "self_instruct")
            if variant in _VARIANT_DEFAULTS:
                data = {**_VARIANT_DEFAULTS[variant], **data}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "SelfInstructConfig":
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        if self.num_seed_demos + self.num_machine_demos >= self.list_length:
            raise ValueError("the demonstrations fill the whole list: raise list_length or show fewer demos")
        return self

    def stop_sequences(self) -> list[str]:
        if self.stop is not None:
            return list(self.stop)
        after = self.list_length + 1
        if self.method == "alpaca":
            # Inputs/outputs may hold blank lines: no blank-line stop. The reference stops at
            # "\n20" and "20."; anchored to an item's start here, so that an output saying
            # "in 2020." or "$20." is not cut off (with the rest of the list).
            return [f"\n{after}.", f"{after}. Instruction"]
        if self.request_format == "completion":
            return ["\n\n", f"\n{after}", f"{after}.", f"{after} ."]
        return [f"\n{after}.", f"\n{after} ."]


# --------------------------------------------------------------------------- pool


class SelfInstructState:
    """The task pool between batches: seed tasks, accepted machine tasks, and the ROUGE-L
    index over both. Rebuild it for a resumed run with ``create(seeds, config, existing)``."""

    def __init__(self, seeds: Sequence[SeedTask], novelty: RougeNovelty) -> None:
        if not seeds:
            raise InputError("Self-Instruct needs at least one seed task")
        self.seeds = list(seeds)
        self.novelty = novelty
        self.machine: list[Instruction] = []
        # Ids of every instruction in the pool (seed tasks and kept tasks).
        self.known_ids: set[str] = {Instruction.key_for(t.instruction) for t in self.seeds}
        self.outputs: dict[str, str] = {}  # machine task id -> an output (Alpaca demos)
        self.prompts_issued = 0  # sample_index of the next prompt: identical prompts stay distinct requests
        self.round = 0

    @classmethod
    def create(cls, seeds: Sequence[SeedTask | Instruction], config: SelfInstructConfig,
               existing: Iterable[Instruction] = (), existing_samples: Iterable[Sample] = ()) -> "SelfInstructState":
        """A pool of ``seeds`` (seed tasks or instruction records) plus machine tasks kept before."""
        tasks = [s if isinstance(s, SeedTask) else seed_tasks([s])[0] for s in seeds]
        state = cls(tasks, RougeNovelty(config.rouge_threshold, use_stemmer=False))
        state.novelty.extend(t.instruction for t in tasks)
        outputs = {s.instruction_id: s.response for s in existing_samples}
        for ins in existing:
            if ins.operator != "instance":
                state.add(ins, outputs.get(ins.id))
        return state

    def add(self, instruction: Instruction, output: str | None = None, *, index: bool = True) -> None:
        """Put an already accepted task in the pool (no novelty check). ``index=False``
        when its text is already in the ROUGE-L index (check_and_add put it there)."""
        self.machine.append(instruction)
        self.known_ids.add(instruction.id)
        if index:
            self.novelty.add(instruction.text)
        if output:
            self.outputs[instruction.id] = output

    @property
    def accepted(self) -> int:
        """Machine tasks in the pool."""
        return len(self.machine)


# --------------------------------------------------------------------------- results


@dataclass
class StepResult(MethodResult):
    """What one batch produced. ``records`` is what the flow stores.

    ``decisions`` explain every dropped item (and carry the ROUGE-L score of every kept
    task). ``rejected`` holds the dropped instructions themselves (``metadata`` names the
    filter and reason), not part of ``records``: a flow that wants their text in SQL too
    can store them, but then must exclude them from datasets.
    """


# --------------------------------------------------------------------------- prompts


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(":")


@dataclass
class _Demo:
    instruction: str
    input: str = ""
    output: str = ""


def choose_demos(state: SelfInstructState, config: SelfInstructConfig, rng: random.Random) -> list[_Demo]:
    """Machine tasks (up to num_machine_demos) plus seed tasks to fill the rest, shuffled."""
    n_machine = min(config.num_machine_demos, len(state.machine))
    machine = rng.sample(state.machine, n_machine)
    n_seed = min(len(state.seeds), config.num_seed_demos + config.num_machine_demos - n_machine)
    demos = [_Demo(m.text, m.input, state.outputs.get(m.id, "")) for m in machine]
    for seed in rng.sample(state.seeds, n_seed):
        inst = seed.instances[0] if seed.instances else SeedInstance(output="")
        demos.append(_Demo(seed.instruction, inst.input, inst.output))
    rng.shuffle(demos)
    return demos


def render_prompt(demos: Sequence[_Demo], config: SelfInstructConfig) -> tuple[str, str]:
    """The generation prompt for ``demos`` and the template ref it came from."""
    chat = config.request_format == "chat"
    nxt = len(demos) + 1
    if config.method == "alpaca":
        template = load_template("alpaca_generate_chat" if chat else "alpaca_generate")
        blocks = [
            f"###\n{i}. Instruction: {_clean(d.instruction)}\n{i}. Input:\n{d.input.strip() or NOINPUT}\n"
            f"{i}. Output:\n{d.output.strip()}"
            for i, d in enumerate(demos, 1)
        ]
        # The reference's prompt announces a list of 20 while its stop sequence ends the
        # list when item 20 begins; both numbers are kept, for its 16 new tasks a request.
        text = template.render(demos="\n".join(blocks), next=nxt, num_tasks=config.list_length + 1,
                               last=config.list_length)
    else:
        template = load_template("self_instruct_generate_chat" if chat else "self_instruct_generate")
        lines = [f"{i}. {_clean(d.instruction)}" for i, d in enumerate(demos, 1)]
        text = template.render(demos="\n".join(lines), next=nxt)
    return text, template.ref


# --------------------------------------------------------------------------- parsing

_NUMBERED = re.compile(r"(?:^|\n)[ \t]*(\d{1,3})[ \t]*[.)][ \t]*")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def parse_numbered_items(text: str, *, first: int, last: int, continuation: bool) -> list[str]:
    """Items of a numbered list. ``continuation``: the text continues item ``first`` (the
    prompt ended with its number), so the text before the first number is that item.
    Otherwise that text is a preamble and is ignored, unless there is no numbered item at
    all (then the whole text is one item, for the filters to judge). Items numbered above
    ``last`` are dropped (in case the backend ignored the stop sequence); each item ends at
    a blank line."""
    pieces = _NUMBERED.split(text)
    items: list[tuple[int, str]] = []
    if continuation or len(pieces) == 1:
        items.append((first, pieces[0]))
    for number, body in zip(pieces[1::2], pieces[2::2]):
        items.append((int(number), body))
    out = []
    for number, body in items:
        if number > last:
            break
        body = _BLANK_LINE.split(body.strip(), maxsplit=1)[0]
        body = re.sub(r"\s+", " ", body).strip()
        if body:
            out.append(body[0].upper() + body[1:])
    return out


_ALPACA_TASK = re.compile(
    r"^\s*(\d+)\s*\.\s*Instruction\s*:(.*?)\n\s*\1\s*\.\s*Input\s*:(.*?)\n\s*\1\s*\.\s*Output\s*:(.*)$", re.S)


def parse_alpaca_tasks(text: str, *, first: int, continuation: bool, truncated: bool,
                       last: int | None = None) -> tuple[list[tuple[str, str, str]], int]:
    """(instruction, input, output) triples of an Alpaca response, and how many blocks did
    not parse. A cut-off response loses its last block (Alpaca drops only that one).
    Tasks numbered above ``last`` are dropped (in case the backend ignored the stop sequence)."""
    raw = f"{first}. Instruction:{text}" if continuation else text
    blocks = [b for b in raw.split("###") if b.strip()]
    if truncated and blocks:
        blocks = blocks[:-1]
    tasks, bad = [], 0
    for block in blocks:
        m = _ALPACA_TASK.match(block.strip())
        if not m:
            bad += 1
            continue
        if last is not None and int(m.group(1)) > last:
            break
        instruction = re.sub(r"\s+", " ", m.group(2)).strip()
        inp = m.group(3).strip()
        inp = "" if inp.lower() == NOINPUT else inp
        tasks.append((instruction, inp, m.group(4).strip()))
    return tasks, bad


def parse_classification(text: str) -> bool | None:
    """True for a 'Yes', False for a 'No' answer, None when it is neither."""
    m = re.match(r"\W*(yes|no)\b", text or "", re.I)
    return None if m is None else m.group(1).lower() == "yes"


def _split_input_output(text: str) -> tuple[str, str]:
    # Self-Instruct's rule: what precedes "Output:" is the input, what follows the output;
    # without an "Output:" the whole text is the output of a task with no input.
    parts = re.split(r"Output\s*\d*\s*:", text, maxsplit=1)
    if len(parts) == 2:
        inp, out = parts
    else:
        inp, out = "", text
    out = re.split(r"Input\s*\d*\s*:", out, maxsplit=1)[0]  # a second pair started here
    inp = re.sub(r"^\s*Input\s*\d*\s*:", "", inp)
    return inp.strip(), out.strip()


def parse_instances(text: str, *, classification: bool) -> list[tuple[str, str]]:
    """(input, output) pairs from an instance-generation response (before filtering)."""
    text = re.split(r"\n\s*Task\s*:", text or "", maxsplit=1)[0].strip()
    pairs: list[tuple[str, str]] = []
    if classification:
        if "Class label:" not in text:
            return []
        for chunk in text.split("Class label:")[1:]:
            label, _, rest = chunk.strip().partition("\n")
            inp = re.sub(r"^\s*Input\s*\d*\s*:", "", rest).strip()
            pairs.append((inp, label.strip()))
        return pairs
    if re.search(r"Example\s*\d*\.?", text):
        chunks = [c.strip() for c in re.split(r"Example\s*\d*\s*[.:]?", text) if c.strip()]
        return [_split_input_output(c) for c in chunks]
    if re.search(r"Output\s*\d*\s*:", text):
        return [_split_input_output(text)]
    return []


# --------------------------------------------------------------------------- filters


def _blacklist_pattern(words: Sequence[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b", re.I)


def check_instruction(text: str, config: SelfInstructConfig, novelty: RougeNovelty,
                      *, blacklist: re.Pattern[str] | None = None, add: bool = True) -> tuple[str, Decision]:
    """Run the Self-Instruct filters in the paper's order; return (filter name, decision) of
    the first filter that drops ``text``, else the ROUGE-L decision (kept, with its score).
    With ``add`` a kept text joins the novelty pool at once."""
    n_words = len(text.split())
    if n_words < config.min_words:
        return F_LENGTH, Decision.drop("too_short", n_words)
    if n_words > config.max_words:
        return F_LENGTH, Decision.drop("too_long", n_words)
    pattern = blacklist if blacklist is not None else _blacklist_pattern(config.blacklist)
    if pattern is not None and pattern.search(text):
        return F_BLACKLIST, Decision.drop("blacklisted_word")
    if text.startswith("Write a program"):
        return F_PROGRAM, Decision.drop("write_a_program")
    if text[0] in string.punctuation:
        return F_START, Decision.drop("starts_with_punctuation")
    if not text[0].isascii():
        return F_START, Decision.drop("starts_non_ascii")
    return F_ROUGE, (novelty.check_and_add(text) if add else novelty.check(text))


def _instance_problem(inp: str, out: str) -> str | None:
    if inp.strip() == out.strip():
        return "input_equals_output"
    if not out.strip():
        return "empty_output"
    if inp.strip().endswith(":") or out.strip().endswith(":"):
        return "ends_with_colon"
    return None


# --------------------------------------------------------------------------- the step


@dataclass
class _Accepted:
    text: str
    input: str
    output: str
    completion: Completion
    request: ChatRequest
    template_ref: str
    score: float | None
    is_classification: bool | None = None


async def aself_instruct_step(teacher: Teacher, state: SelfInstructState, config: SelfInstructConfig, *,
                              rng: random.Random, batch_size: int = 8, run_id: str | None = None) -> StepResult:
    """One batch: ``batch_size`` generation prompts sent at once, their items filtered into
    the pool, then (Self-Instruct) classification and instances for the accepted tasks."""
    counts = Counts()
    result = StepResult()
    state.round += 1
    chat = config.request_format == "chat"

    requests, refs, firsts = [], [], []
    for _ in range(batch_size):
        demos = choose_demos(state, config, rng)
        text, ref = render_prompt(demos, config)
        firsts.append(len(demos) + 1)
        requests.append(make_request(
            config.request_format, text, system=config.system_prompt, sample_index=state.prompts_issued,
            tag="self_instruct.generate", temperature=config.temperature, top_p=config.top_p,
            presence_penalty=config.presence_penalty or None, max_tokens=config.max_tokens,
            stop=config.stop_sequences()))
        refs.append(ref)
        state.prompts_issued += 1
    counts.inc("requests", len(requests))
    completions = await teacher.agenerate(requests)

    blacklist = _blacklist_pattern(config.blacklist)
    accepted: list[_Accepted] = []
    for request, ref, first, done in zip(requests, refs, firsts, completions):
        if not done.ok or done.text is None:
            counts.inc("failed")
            continue
        if config.method == "alpaca":
            items, bad = parse_alpaca_tasks(done.text, first=first, continuation=not chat, truncated=done.truncated,
                                            last=config.list_length)
            counts.inc("unparseable_items", bad)
            if done.truncated:
                counts.inc("truncated")
        else:
            if done.truncated:  # Self-Instruct drops a response cut off by length whole
                counts.inc("truncated")
                continue
            items = [(t, "", "") for t in parse_numbered_items(
                done.text, first=first, last=config.list_length, continuation=not chat)]
        if not items:
            counts.inc("empty_responses")
        counts.inc("parsed", len(items))
        for text, inp, out in items:
            if config.method == "alpaca" and not out.strip():  # cannot become a sample
                name, decision = F_OUTPUT, Decision.drop("empty_output")
            else:
                name, decision = check_instruction(text, config, state.novelty, blacklist=blacklist)
            item_id = Instruction.key_for(text, inp)
            if not decision.kept and item_id in state.known_ids:
                # A copy of a seed or of a kept task: the item already exists and is fine;
                # a drop decision under its id would mark *it* dropped. Count it only.
                counts.inc(f"dropped_{decision.reason}")
                counts.inc("copies_of_pool_items")
                continue
            result.decisions.append(to_record(decision, item_id=item_id, filter=name,
                                              item_kind="instruction", run_id=run_id))
            if not decision.kept:
                counts.inc(f"dropped_{decision.reason}")
                result.rejected.append(Instruction(
                    text=text, input=inp, method=config.method, round=state.round, request_key=done.key,
                    teacher_model=teacher.model, template_version=ref, run_id=run_id,
                    metadata={"rejected_by": name, "reason": decision.reason}))
                continue
            state.known_ids.add(item_id)  # joins the pool now: a later copy in this batch is a copy
            accepted.append(_Accepted(text, inp, out, done, request, ref, decision.score))

    if config.method == "self_instruct" and accepted:
        if config.identify_classification:
            await _identify_classification(teacher, accepted, config, counts)
        tasks = [_task_record(a, teacher, config, state, run_id) for a in accepted]
        for task in tasks:
            state.add(task, index=False)
        result.instructions.extend(tasks)
        if config.generate_instances:
            await _generate_instances(teacher, accepted, tasks, config, state, rng, result, counts, run_id)
    else:
        for acc in accepted:
            task = _task_record(acc, teacher, config, state, run_id)
            state.add(task, acc.output, index=False)
            result.instructions.append(task)
            result.samples.append(Sample(
                instruction_id=task.id, response=acc.output, method=config.method, teacher_model=teacher.model,
                request_key=acc.completion.key, finish_reason=acc.completion.finish_reason,
                template_version=acc.template_ref, sampling_params=params_of(teacher, acc.request), run_id=run_id))
    counts.inc("kept", len(accepted))
    result.counts = counts.as_dict()
    return result


def _task_record(acc: _Accepted, teacher: Teacher, config: SelfInstructConfig, state: SelfInstructState,
                 run_id: str | None) -> Instruction:
    metadata: dict[str, Any] = {"rouge_l_max": acc.score}
    return Instruction(
        text=acc.text, input=acc.input, method=config.method, round=state.round,
        is_classification=acc.is_classification, request_key=acc.completion.key, teacher_model=teacher.model,
        template_version=acc.template_ref, sampling_params=params_of(teacher, acc.request), run_id=run_id,
        metadata=metadata)


async def _identify_classification(teacher: Teacher, accepted: list[_Accepted], config: SelfInstructConfig,
                                   counts: Counts) -> None:
    template = load_template("self_instruct_classify")
    requests = [
        make_request(config.request_format, template.render(instruction=a.text), system=config.system_prompt,
                     tag="self_instruct.classify", temperature=0.0, max_tokens=3, stop=["\n"])
        for a in accepted
    ]
    counts.inc("classify_requests", len(requests))
    for acc, done in zip(accepted, await teacher.agenerate(requests)):
        answer = parse_classification(done.text or "") if done.ok else None
        if not done.ok:
            counts.inc("classify_failed")
        elif answer is None:
            counts.inc("classify_unparsed")
        acc.is_classification = answer
        counts.inc("classification" if answer else "not_classification")


async def _generate_instances(teacher: Teacher, accepted: list[_Accepted], tasks: list[Instruction],
                              config: SelfInstructConfig, state: SelfInstructState, rng: random.Random,
                              result: StepResult, counts: Counts, run_id: str | None) -> None:
    requests, refs = [], []
    for acc in accepted:
        if acc.is_classification:
            template, stop = load_template("self_instruct_instances_output_first"), ["Task:"]
            # The reference lowers the limit for a whole batch of 5 prompts when one of
            # them is classification; a request here is one task, so the limit is per task.
            max_tokens = config.instance_max_tokens_classification
        else:
            template, stop = (load_template("self_instruct_instances_input_first"),
                              [f"Example {config.max_instances + 1}", "Task:"])
            max_tokens = config.instance_max_tokens
        requests.append(make_request(
            config.request_format, template.render(instruction=acc.text), system=config.system_prompt,
            tag="self_instruct.instances", temperature=config.instance_temperature,
            presence_penalty=config.instance_presence_penalty or None, max_tokens=max_tokens, stop=stop))
        refs.append(template.ref)
    counts.inc("instance_requests", len(requests))
    completions = await teacher.agenerate(requests)

    for acc, task, request, ref, done in zip(accepted, tasks, requests, refs, completions):
        if not done.ok or done.text is None:
            counts.inc("instance_failed")
            task.metadata["instances"] = 0
            continue
        pairs = parse_instances(done.text, classification=bool(acc.is_classification))
        if done.truncated and pairs:  # the last instance is likely cut off
            pairs = pairs[:-1]
            counts.inc("instances_dropped_truncated")

        def instance_id(inp: str) -> str:
            return Instruction.key_for(task.text, inp) if inp.strip() else task.id

        valid: list[tuple[str, str]] = []
        for inp, out in pairs:
            problem = _instance_problem(inp, out)
            if problem:
                counts.inc(f"instances_dropped_{problem}")
                result.decisions.append(FilterDecision(
                    item_id=Sample.key_for(instance_id(inp), out), item_kind="sample", filter=F_INSTANCE,
                    kept=False, reason=problem, run_id=run_id))
                continue
            if (inp, out) not in valid:
                valid.append((inp, out))
        outputs: dict[str, set[str]] = {}
        for inp, out in valid:
            if inp.strip():
                outputs.setdefault(inp.strip(), set()).add(out.strip())
        reason = None
        if any(len(outs) > 1 for outs in outputs.values()):
            reason = "same_input_different_outputs"
        elif not valid:
            reason = "no_instances"
        if reason:
            counts.inc(f"tasks_dropped_{reason}")
            task.metadata["instances"] = 0
            result.decisions.append(FilterDecision(item_id=task.id, item_kind="instruction", filter=F_INSTANCES,
                                                   kept=False, reason=reason, run_id=run_id))
            continue
        if len(valid) > config.max_instances:
            keep = sorted(rng.sample(range(len(valid)), config.max_instances))
            valid = [valid[i] for i in keep]
        task.metadata["instances"] = len(valid)
        params = params_of(teacher, request)
        for inp, out in valid:
            target_id = task.id
            if inp.strip():
                instance = Instruction(
                    text=task.text, input=inp, method=config.method, parent_id=task.id, operator="instance",
                    round=task.round, is_classification=task.is_classification, request_key=done.key,
                    teacher_model=teacher.model, template_version=ref, sampling_params=params, run_id=run_id)
                result.instructions.append(instance)
                target_id = instance.id
            result.samples.append(Sample(
                instruction_id=target_id, response=out, method=config.method, teacher_model=teacher.model,
                request_key=done.key, finish_reason=done.finish_reason, template_version=ref,
                sampling_params=params, run_id=run_id))
        counts.inc("instances_kept", len(valid))


@dataclass
class Pool:
    """What a run starts from: the human seed tasks, and machine tasks kept before (with
    their answers, which Alpaca's demonstrations show)."""

    seeds: list[SeedTask]
    tasks: list[Instruction] = field(default_factory=list)
    outputs: list[Sample] = field(default_factory=list)


class SelfInstructRunner:
    """Self-Instruct (or Alpaca) steps over a pool that every step grows (not parallel:
    each batch's prompts show tasks the previous batches kept)."""

    parallel = False

    def __init__(self, pool: Pool, config: SelfInstructConfig, *, run_name: str, batch_size: int,
                 run_id: str | None = None) -> None:
        self.config = config
        self.method = config.method
        self.state = SelfInstructState.create(pool.seeds, config, pool.tasks, pool.outputs)
        self.rng = rng_for(run_name, self.method)
        self.batch_size = batch_size
        self.run_id = run_id
        self.batches = 0

    def next_batch(self, max_requests: int) -> Batch[int] | None:
        """A batch's payload is how many generation prompts it sends."""
        size = min(self.batch_size, max_requests)
        if size <= 0:
            return None
        self.batches += 1
        return Batch(self.batches, size, requests=size, max_samples=size * self.config.list_length)

    async def run(self, teacher: Teacher, batch: Batch[int]) -> StepResult:
        return await aself_instruct_step(teacher, self.state, self.config, rng=self.rng, batch_size=batch.payload,
                                         run_id=self.run_id)

    def absorb(self, batch: Batch[int], result: StepResult) -> None:
        return None  # aself_instruct_step already added the accepted tasks to the pool
