"""Self-Instruct and its Alpaca variant, driven by a scripted teacher."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from generators.self_instruct import (
    SelfInstructConfig,
    SelfInstructState,
    check_instruction,
    choose_demos,
    parse_alpaca_tasks,
    parse_classification,
    parse_instances,
    parse_numbered_items,
    render_prompt,
    Pool,
    SelfInstructRunner,
    aself_instruct_step,
)
from generators.teachers.base import ChatRequest, Completion
from generators.teachers.scripted import ScriptedTeacher, prompt_text
from runners import drive
from storage.seeds import SeedInstance, SeedTask

SEED_TEXTS = [
    "Give three tips for staying focused while studying at home.",
    "Translate the sentence into Spanish.",
    "Decide whether the review is positive or negative.",
    "Explain how a rainbow forms in simple words.",
    "Suggest a vegetarian dinner recipe using lentils.",
    "Summarize the paragraph in one sentence.",
    "Classify the animal as a mammal, bird, reptile or fish.",
    "Write a haiku about autumn leaves falling.",
]


def seeds(n: int = 8) -> list[SeedTask]:
    return [
        SeedTask(name=f"s{i}", instruction=t, instances=[SeedInstance(input=f"in {i}", output=f"out {i}")],
                 is_classification="lassif" in t or "Decide" in t)
        for i, t in enumerate(SEED_TEXTS[:n])
    ]


def no_instances(**kw) -> SelfInstructConfig:
    return SelfInstructConfig(identify_classification=False, generate_instances=False, **kw)


def generating(text: str | Completion, **extra):
    """A script answering every generation request with ``text``; ``extra`` maps tags to answers."""
    def script(req: ChatRequest):
        if req.tag == "self_instruct.generate":
            return text
        return extra[req.tag](req) if callable(extra.get(req.tag)) else extra[req.tag]
    return script


# --------------------------------------------------------------------------- parsing


def test_parse_continuation_list():
    text = " Name three rivers in Europe.\n10. Describe the water cycle\nin two sentences.\n11.List two uses of salt."
    assert parse_numbered_items(text, first=9, last=15, continuation=True) == [
        "Name three rivers in Europe.", "Describe the water cycle in two sentences.", "List two uses of salt."]


def test_parse_stops_at_blank_line_and_after_last_item():
    text = " First new task here.\n10. Second task here\n\nSome chatter after the list.\n16. Too far.\n17. No."
    assert parse_numbered_items(text, first=9, last=15, continuation=True) == [
        "First new task here.", "Second task here"]
    assert parse_numbered_items(" a\n15. b\n16. c", first=9, last=15, continuation=True) == ["A", "B"]


def test_parse_chat_ignores_preamble_but_keeps_garbage():
    text = "Sure! Here are more tasks:\n9. Plan a picnic menu for six.\n10. Rewrite the note politely."
    assert parse_numbered_items(text, first=9, last=15, continuation=False) == [
        "Plan a picnic menu for six.", "Rewrite the note politely."]
    assert parse_numbered_items("I cannot help with that.", first=9, last=15, continuation=False) == [
        "I cannot help with that."]
    assert parse_numbered_items("   \n ", first=9, last=15, continuation=True) == []


def test_parse_classification_answers():
    assert parse_classification(" Yes") is True
    assert parse_classification("no, it is not") is False
    assert parse_classification("Maybe") is None
    assert parse_classification("") is None


def test_parse_instances_input_first_and_output_first():
    text = "Example 1\nInput: 3 + 4\nOutput: 7\nExample 2\nInput: 10 - 2\nOutput: 8\n\nTask: Another task"
    assert parse_instances(text, classification=False) == [("3 + 4", "7"), ("10 - 2", "8")]
    assert parse_instances("Output: Just this.", classification=False) == [("", "Just this.")]
    assert parse_instances("no structure at all", classification=False) == []
    text = "Class label: Even\nInput: 48\nClass label: Odd\nInput: 17"
    assert parse_instances(text, classification=True) == [("48", "Even"), ("17", "Odd")]
    assert parse_instances("Class label: Summer", classification=True) == [("", "Summer")]
    assert parse_instances("Even: 48", classification=True) == []


def test_parse_alpaca_tasks():
    text = (" Name a fruit that is yellow.\n4. Input:\n<noinput>\n4. Output:\nA banana.\n###\n"
            "5. Instruction: Sort the numbers ascending.\n5. Input:\n3, 1, 2\n5. Output:\n1, 2, 3\n###\n"
            "6. Instruction: garbled block\n###\n7. Instruction: Cut off here.\n7. Input:")
    tasks, bad = parse_alpaca_tasks(text, first=4, continuation=True, truncated=False)
    assert tasks == [("Name a fruit that is yellow.", "", "A banana."), ("Sort the numbers ascending.", "3, 1, 2", "1, 2, 3")]
    assert bad == 2
    tasks, bad = parse_alpaca_tasks(text, first=4, continuation=True, truncated=True)
    assert len(tasks) == 2 and bad == 1  # the cut-off last block is dropped, not counted as garbage


# --------------------------------------------------------------------------- config, seeds, prompt


def test_config_defaults_and_alpaca_variant():
    c = SelfInstructConfig()
    assert (c.num_seed_demos, c.num_machine_demos, c.temperature, c.top_p, c.presence_penalty, c.max_tokens) == (
        6, 2, 0.7, 0.5, 2.0, 1024)
    assert c.stop_sequences() == ["\n\n", "\n16", "16.", "16 ."]
    a = SelfInstructConfig(method="alpaca")
    assert (a.num_seed_demos, a.list_length, a.temperature, a.max_tokens) == (3, 19, 1.0, 3072)
    assert a.stop_sequences() == ["\n20.", "20. Instruction"]
    assert {"video", "audio", "music", "flowchart", "diagram", "image"} <= set(a.blacklist)
    assert SelfInstructConfig(method="alpaca", temperature=0.5).temperature == 0.5
    with pytest.raises(ValidationError):
        SelfInstructConfig(min_words=10, max_words=5)
    with pytest.raises(ValidationError):
        SelfInstructConfig(bogus=1)


def test_demos_six_seeds_two_machine_shuffled_and_prompt_ends_at_nine():
    config = no_instances()
    state = SelfInstructState.create(seeds(), config)
    rng = random.Random(0)
    demos = choose_demos(state, config, rng)
    assert len(demos) == 8 and {d.instruction for d in demos} == set(SEED_TEXTS)  # pool empty: 8 seeds
    from storage.records import Instruction
    for text in ["Plan a three-day trip to the mountains.", "List five words that rhyme with cat."]:
        state.add(Instruction(text=text, method="self_instruct"))
    demos = choose_demos(state, config, rng)
    machine = [d for d in demos if d.instruction not in SEED_TEXTS]
    assert len(demos) == 8 and len(machine) == 2
    text, ref = render_prompt(demos, config)
    assert text.endswith("\n8. " + demos[-1].instruction.rstrip(":") + "\n9.")
    assert ref == "self_instruct_generate@1"


# --------------------------------------------------------------------------- filters


def test_each_filter_with_its_reason():
    config = no_instances()
    state = SelfInstructState.create(seeds(), config)
    cases = {
        "Do it.": ("self_instruct.length", "too_short"),
        " ".join(["word"] * 151): ("self_instruct.length", "too_long"),
        "Describe the picture of a lighthouse at night.": ("self_instruct.blacklist", "blacklisted_word"),
        "Tell me how to GO TO the station from here.": ("self_instruct.blacklist", "blacklisted_word"),
        "Write a program that sorts a list of names.": ("self_instruct.program", "write_a_program"),
        "- Explain why bread goes stale over time.": ("self_instruct.start", "starts_with_punctuation"),
        "¿Explain how tides work in a few sentences?": ("self_instruct.start", "starts_non_ascii"),
        "Give three tips for staying focused while studying.": ("rouge_novelty", "too_similar"),
    }
    for text, (name, reason) in cases.items():
        got_name, decision = check_instruction(text, config, state.novelty)
        assert (got_name, decision.kept, decision.reason) == (name, False, reason), text
    name, decision = check_instruction("Mapping out a budget: list four monthly expenses.", config, state.novelty)
    assert (name, decision.kept) == ("rouge_novelty", True)  # 'map' is a whole word only
    assert 0 <= decision.score <= 0.7
    name, decision = check_instruction("Compose calm music for a rainy day.",
                                       no_instances(blacklist=["music"]), state.novelty)
    assert decision.reason == "blacklisted_word"


async def test_step_records_reasons_and_pool_grows_immediately():
    response = (" Name three rivers that flow through Europe.\n"
                "10. Name three rivers that flow through Europe today.\n"
                "11. Draw a map of your neighbourhood.\n"
                "12. Write a program to reverse a string.\n"
                "13. Hi.\n"
                "14. Suggest two board games for a family evening.")
    teacher = ScriptedTeacher(generating(response))
    config = no_instances()
    state = SelfInstructState.create(seeds(), config)
    step = await aself_instruct_step(teacher, state, config, rng=random.Random(1), batch_size=1, run_id="r1")
    texts = [i.text for i in step.instructions]
    assert texts == ["Name three rivers that flow through Europe.", "Suggest two board games for a family evening."]
    reasons = {d.reason for d in step.decisions if not d.kept}
    assert reasons == {"too_similar", "blacklisted_word", "write_a_program", "too_short"}
    assert step.counts["dropped_too_similar"] == 1 and step.counts["kept"] == 2 and step.counts["parsed"] == 6
    assert state.accepted == 2 and len(state.novelty) == 8 + 2
    ins = step.instructions[0]
    assert ins.method == "self_instruct" and ins.template_version == "self_instruct_generate@1"
    assert ins.teacher_model == "scripted" and ins.request_key and ins.run_id == "r1"
    assert ins.sampling_params["temperature"] == 0.7 and ins.sampling_params["presence_penalty"] == 2.0
    assert {r.text for r in step.rejected} >= {"Hi."}
    req = teacher.calls[0]
    assert req.kind == "completion" and req.prompt.endswith("9.")
    assert req.params.top_p == 0.5 and req.params.max_tokens == 1024 and "\n\n" in req.params.stop


async def test_a_copied_seed_gets_no_drop_decision_under_its_own_id():
    seed_text = SEED_TEXTS[0]
    teacher = ScriptedTeacher(generating(f" {seed_text}\n10. Plan a scavenger hunt for a rainy afternoon.\n"
                                         "11. Plan a scavenger hunt for a rainy afternoon."))
    config = no_instances()
    state = SelfInstructState.create(seeds(), config)
    step = await aself_instruct_step(teacher, state, config, rng=random.Random(0), batch_size=1)
    from storage.records import Instruction
    ids = {Instruction.key_for(seed_text)} | {i.id for i in step.instructions}
    assert not [d for d in step.decisions if d.item_id in ids and not d.kept]
    assert step.counts["dropped_too_similar"] == 2 and step.counts["copies_of_pool_items"] == 2
    assert [i.text for i in step.instructions] == ["Plan a scavenger hunt for a rainy afternoon."]


async def test_truncated_response_dropped_whole_and_failures_counted():
    cut = Completion(key="", ok=True, text=" Plan a garden.\n10. List four", finish_reason="length")
    teacher = ScriptedTeacher(generating(cut))
    config = no_instances()
    state = SelfInstructState.create(seeds(), config)
    step = await aself_instruct_step(teacher, state, config, rng=random.Random(0), batch_size=2)
    assert step.instructions == [] and step.counts["truncated"] == 2 and state.accepted == 0

    failing = ScriptedTeacher(lambda req: Completion(key="", ok=False, error="http 503"))
    step = await aself_instruct_step(failing, state, config, rng=random.Random(0), batch_size=3)
    assert step.counts["failed"] == 3 and step.instructions == [] and step.samples == []


async def test_garbage_output_is_filtered_not_crashing():
    teacher = ScriptedTeacher(generating("!!!\n\n???"))
    config = no_instances()
    step = await aself_instruct_step(teacher, SelfInstructState.create(seeds(), config), config,
                              rng=random.Random(0), batch_size=1)
    assert step.instructions == [] and step.counts["dropped_too_short"] == 1


async def test_chat_format_requests():
    teacher = ScriptedTeacher(generating("Sure:\n9. Plan a weekend reading schedule for a busy parent."))
    config = no_instances(request_format="chat", system_prompt="You write tasks.")
    step = await aself_instruct_step(teacher, SelfInstructState.create(seeds(), config), config,
                              rng=random.Random(0), batch_size=1)
    assert [i.text for i in step.instructions] == ["Plan a weekend reading schedule for a busy parent."]
    req = teacher.calls[0]
    assert req.kind == "chat" and req.messages[0] == {"role": "system", "content": "You write tasks."}
    assert "\n\n" not in req.params.stop and step.instructions[0].template_version == "self_instruct_generate_chat@1"


# --------------------------------------------------------------------------- classification and instances


async def test_classification_and_instances():
    response = (" Decide whether the number is prime or composite.\n"
                "10. Convert the distance from miles to kilometres.\n"
                "11. Tell whether the fruit named is sweet or sour.\n"
                "12. Give the capital city of the country named.")
    instances = {
        "Decide whether the number is prime or composite.":
            "Class label: Prime\nInput: 13\nClass label: Composite\nInput: 12",
        "Convert the distance from miles to kilometres.":
            "Example 1\nInput: 1 mile\nOutput: 1.6 km\nExample 2\nInput: 5 miles\nOutput: 5 miles\n"
            "Example 3\nInput: 10 miles\nOutput:\nExample 4\nInput: 2 miles\nOutput: The answer is:\n"
            "Example 5\nInput: 3 miles\nOutput: 4.8 km",
        "Tell whether the fruit named is sweet or sour.":
            "Class label: Sweet\nInput: mango\nClass label: Sour\nInput: mango",
        "Give the capital city of the country named.": "I am not sure what to write.",
    }

    def classify(req):
        return "Yes" if "prime" in prompt_text(req).split("Task:")[-1] or "sweet" in prompt_text(req).split(
            "Task:")[-1] else "No"

    def instance(req):
        task = prompt_text(req).split("Task:")[-1].strip()
        return instances[task]

    teacher = ScriptedTeacher(generating(response, **{"self_instruct.classify": classify,
                                                      "self_instruct.instances": instance}))
    config = SelfInstructConfig()
    step = await aself_instruct_step(teacher, SelfInstructState.create(seeds(), config), config,
                              rng=random.Random(0), batch_size=1)
    tasks = {i.text: i for i in step.instructions if i.operator is None}
    assert len(tasks) == 4
    prime = tasks["Decide whether the number is prime or composite."]
    assert prime.is_classification is True
    assert tasks["Convert the distance from miles to kilometres."].is_classification is False

    classify_req = next(r for r in teacher.calls if r.tag == "self_instruct.classify")
    assert classify_req.params.temperature == 0.0
    out_first = next(r for r in teacher.calls if r.tag == "self_instruct.instances"
                     and "prime" in prompt_text(r).split("Task:")[-1])
    assert "Class label:" in prompt_text(out_first)

    def samples_of(task):
        ids = {task.id} | {i.id for i in step.instructions if i.parent_id == task.id}
        return sorted((next(i.input for i in step.instructions if i.id == s.instruction_id), s.response)
                      for s in step.samples if s.instruction_id in ids)

    assert samples_of(prime) == [("12", "Composite"), ("13", "Prime")]
    miles = tasks["Convert the distance from miles to kilometres."]
    assert samples_of(miles) == [("1 mile", "1.6 km"), ("3 miles", "4.8 km")]
    instance_reasons = sorted(d.reason for d in step.decisions if d.filter == "self_instruct.instance")
    assert instance_reasons == ["empty_output", "ends_with_colon", "input_equals_output"]
    task_reasons = {d.item_id: d.reason for d in step.decisions if d.filter == "self_instruct.instances"}
    assert task_reasons == {
        tasks["Tell whether the fruit named is sweet or sour."].id: "same_input_different_outputs",
        tasks["Give the capital city of the country named."].id: "no_instances",
    }
    child = next(i for i in step.instructions if i.parent_id == prime.id)
    assert child.operator == "instance" and child.template_version == "self_instruct_instances_output_first@1"
    assert all(s.method == "self_instruct" and s.template_version.startswith("self_instruct_instances")
               for s in step.samples)


async def test_at_most_five_instances_and_no_input_instances_attach_to_task():
    many = "\n".join(f"Example {i}\nInput: {i} apples\nOutput: {i * 2} halves" for i in range(1, 8))
    teacher = ScriptedTeacher(generating(
        " Split each apple into halves and count them.\n10. Write a limerick about a forgetful owl.",
        **{"self_instruct.classify": "No",
           "self_instruct.instances": lambda r: many if "apple" in prompt_text(r).split("Task:")[-1]
           else "Example 1\nInput:\nOutput: An owl who forgot where she slept..."}))
    config = SelfInstructConfig()
    step = await aself_instruct_step(teacher, SelfInstructState.create(seeds(), config), config,
                              rng=random.Random(0), batch_size=1)
    apple = next(i for i in step.instructions if i.text.startswith("Split") and i.operator is None)
    assert apple.metadata["instances"] == 5
    assert len([i for i in step.instructions if i.parent_id == apple.id]) == 5
    owl = next(i for i in step.instructions if i.text.startswith("Write a limerick"))
    assert [s.response for s in step.samples if s.instruction_id == owl.id] == ["An owl who forgot where she slept..."]


# --------------------------------------------------------------------------- Alpaca and the loop


async def test_alpaca_variant():
    response = (" Name a fruit that is yellow.\n4. Input:\n<noinput>\n4. Output:\nA banana.\n###\n"
                "5. Instruction: Compose a short melody description using music terms.\n5. Input:\n<noinput>\n"
                "5. Output:\nA slow waltz.\n###\n"
                "6. Instruction: Sort these numbers in ascending order.\n6. Input:\n3, 1, 2\n6. Output:\n1, 2, 3\n###\n"
                "7. Instruction: Count the vowels in the word.\n7. Input:\nbanana\n7. Output:\n")
    teacher = ScriptedTeacher(generating(Completion(key="", ok=True, text=response, finish_reason="length")))
    config = SelfInstructConfig(method="alpaca")
    state = SelfInstructState.create(seeds(), config)
    step = await aself_instruct_step(teacher, state, config, rng=random.Random(0), batch_size=1)
    assert [(i.text, i.input) for i in step.instructions] == [
        ("Name a fruit that is yellow.", ""), ("Sort these numbers in ascending order.", "3, 1, 2")]
    assert [s.response for s in step.samples] == ["A banana.", "1, 2, 3"]
    assert all(i.method == "alpaca" and i.template_version == "alpaca_generate@1" for i in step.instructions)
    assert step.counts["dropped_blacklisted_word"] == 1 and step.counts["truncated"] == 1
    prompt = teacher.calls[0].prompt
    assert prompt.count("Instruction:") == 4 and prompt.endswith("###\n4. Instruction:")
    assert "List of 20 tasks" in prompt
    assert not [r for r in teacher.calls if r.tag != "self_instruct.generate"]  # no instance step
    assert state.outputs[step.instructions[0].id] == "A banana."


async def test_runner_grows_the_pool_batch_by_batch_and_a_useless_teacher_adds_nothing():
    topics = iter(["volcanoes erupting underwater", "medieval bread baking", "training a stubborn parrot",
                   "tax rules for freelancers", "knitting wool socks quickly", "the history of chess clocks"])

    def script(req):
        if req.tag == "self_instruct.generate":
            return f" Explain {next(topics)} to a curious child."
        return "No" if req.tag == "self_instruct.classify" else "Output: Something fun."

    teacher = ScriptedTeacher(script)
    runner = SelfInstructRunner(Pool(seeds()), SelfInstructConfig(), run_name="t", batch_size=2)
    result = await drive(runner, teacher, max_batches=2)
    assert runner.state.accepted >= 3 and runner.batches == 2
    assert len(result.samples) == runner.state.accepted  # one no-input instance each
    indexes = [r.sample_index for r in teacher.calls if r.tag == "self_instruct.generate"]
    assert indexes == list(range(len(indexes)))  # every prompt is a distinct request

    useless = ScriptedTeacher(lambda req: "Hi.")
    runner = SelfInstructRunner(Pool(seeds()), no_instances(), run_name="t", batch_size=2)
    result = await drive(runner, useless, max_batches=4)
    assert runner.batches == 4 and runner.state.accepted == 0 and result.counts["dropped_too_short"] == 8


# --------------------------------------------------------------------------- faithful to the reference code


def test_length_filter_drops_three_words_like_the_reference():
    # The reference (bootstrap_instructions.py and Alpaca's generate_instruction.py) drops
    # an instruction of 3 words or fewer, and of more than 150.
    for config in (no_instances(), SelfInstructConfig(method="alpaca")):
        state = SelfInstructState.create(seeds(), config)
        name, decision = check_instruction("Name three fruits.", config, state.novelty)
        assert (name, decision.kept, decision.reason, decision.score) == ("self_instruct.length", False, "too_short", 3)
        name, decision = check_instruction("Name three tropical fruits.", config, state.novelty)
        assert name != "self_instruct.length"
    # min_words is the fewest words a kept instruction has, as max_words is the most.
    config = no_instances(min_words=5, max_words=6)
    state = SelfInstructState.create(seeds(), config)
    for n, reason in [(4, "too_short"), (5, None), (6, None), (7, "too_long")]:
        text = "Name " + " ".join(["tropical"] * (n - 2)) + " fruits."
        assert (check_instruction(text, config, state.novelty, add=False)[1].reason or None) == reason, n


async def test_instance_requests_use_the_reference_sampling():
    # generate_instances.py: temperature 0, presence penalty 1.5; max_tokens 300 for
    # classification (output-first) prompts, 350 otherwise.
    teacher = ScriptedTeacher(generating(
        " Decide whether the number is prime or composite.\n10. Convert the distance from miles to kilometres.",
        **{"self_instruct.classify": lambda r: "Yes" if "prime" in prompt_text(r).split("Task:")[-1] else "No",
           "self_instruct.instances": "Output: 7"}))
    config = SelfInstructConfig()
    await aself_instruct_step(teacher, SelfInstructState.create(seeds(), config), config,
                              rng=random.Random(0), batch_size=1)
    calls = {prompt_text(r).split("Task:")[-1].strip(): r.params for r in teacher.calls
             if r.tag == "self_instruct.instances"}
    clf = calls["Decide whether the number is prime or composite."]
    gen = calls["Convert the distance from miles to kilometres."]
    assert (clf.temperature, clf.presence_penalty, clf.max_tokens) == (0.0, 1.5, 300)
    assert (gen.temperature, gen.presence_penalty, gen.max_tokens) == (0.0, 1.5, 350)
    custom = SelfInstructConfig(instance_presence_penalty=0, instance_max_tokens_classification=64)
    assert (custom.instance_presence_penalty, custom.instance_max_tokens_classification) == (0, 64)


def _cut_at_stops(text: str, stops) -> str:
    """What a real backend returns: the text up to the first stop sequence."""
    cut = min((i for i in (text.find(s) for s in stops or ()) if i >= 0), default=len(text))
    return text[:cut]


@pytest.mark.parametrize("request_format", ["completion", "chat"])
async def test_alpaca_list_stops_at_item_twenty_like_the_reference(request_format):
    # generate_instruction.py: 3 demos, a prompt asking for "20" tasks, and stop=["\n20",
    # "20.", "20."]: items 4-19, 16 new tasks a request. The teacher here writes on past it.
    def block(i: int) -> str:
        return (f"{i}. Instruction: Describe the {i}th tallest mountain on Earth.\n"
                f"{i}. Input:\n<noinput>\n{i}. Output:\nIt is very tall.\n")

    def script(req):
        text = "\n###\n".join(block(i) for i in range(4, 23))
        text = text[len("4. Instruction:"):] if req.kind == "completion" else text
        return _cut_at_stops(text, req.params.stop)

    teacher = ScriptedTeacher(script)
    config = SelfInstructConfig(method="alpaca", request_format=request_format, rouge_threshold=1.0)
    step = await aself_instruct_step(teacher, SelfInstructState.create(seeds(), config), config,
                                     rng=random.Random(0), batch_size=1)
    assert [i.text for i in step.instructions] == [
        f"Describe the {i}th tallest mountain on Earth." for i in range(4, 20)]
    prompt = prompt_text(teacher.calls[0])
    assert "List of 20 tasks" in prompt
    if request_format == "chat":
        assert "from task 4 up to task 19" in prompt
    # A backend that ignores the stop sequences still yields no task past 19.
    raw = "\n###\n".join(block(i) for i in range(4, 23))
    tasks, bad = parse_alpaca_tasks(raw, first=4, last=config.list_length, continuation=False, truncated=False)
    assert len(tasks) == 16 and bad == 0
