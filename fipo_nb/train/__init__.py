"""Training on one device: the step in stage order, and the loop around it.

    step.py         one RL step, stage by stage, top to bottom
    collect.py      data -> rollout -> reward -> dynamic sampling: a step's Batch
    update.py       one optimizer update: a mini-batch's gradient over its micro-batches
    trainer.py      FIPOTrainer: the loop, interrupts, resume
    checkpoint.py   checkpoints written atomically, verified, resumed
    interrupts.py   Ctrl-C that waits for a safe point
    runlog.py       metrics.jsonl / eval.jsonl and the terminal table
    evaluation.py   avg@k / pass@k on held-out problems
    heap.py         freed heap pages back to the system between a step's stages

Importing this package loads nothing heavy: `from fipo_nb.train.trainer import FIPOTrainer`.
"""
