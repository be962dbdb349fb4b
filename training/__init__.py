"""Students from teachers: a thin, typed layer over TRL (docs: ../shared/DESIGN.md, "Training").

    config.py                 TrainConfig / EvalConfig: methods, presets, validation
    student.py                build_student (prune a teacher's layers), check_same_tokenizer
    data.py                   dataset rows -> chat prompt/completion or messages examples
    sft.py                    method sft: trl.SFTTrainer, loss on the assistant turn only
    kd.py                     methods kd, rkl, jsd, seqkd, gkd, onpolicy: trl.experimental.gkd.GKDTrainer
    distill_step_by_step.py   method distill: "predict:" label + "explain:" rationale, label_weight
    progress.py               rich progress bar + caller progress callback + loss history
    train.py                  train(config, rows | store + dataset) -> TrainResult; training_runs row
    evaluate.py               ROUGE-L, exact match, KL(teacher || student); evaluations rows; table
    records.py                the SQL for training_runs and evaluations
    testing.py                tiny random LLaMA on the SmolLM2 tokenizer, toy rows (tests)
"""
