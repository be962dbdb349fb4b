"""The bottom layer: what every other package may use, and which uses nothing of ours.

- ``core.errors``: the errors a user can fix (one line, exit code 2 in the CLI);
- ``core.config``: reading a YAML config with ``--set`` overrides, and one formatter that
  turns a pydantic validation error into one line naming each bad field;
- ``core.jsonl``: reading JSONL with errors that name the file and line;
- ``core.text``: how an instruction becomes a prompt and how an answer is read out of a
  chain-of-thought text: one definition for generation, export, training and evaluation;
- ``core.embedded``: the embedded default model's files (SmolLM2-135M-Instruct).

Layers, top to bottom: flows -> generators, training -> filters -> storage -> core.
"""
