"""Trainer (layer 4): one recipe per method family on TRL, and what they share.

Recipes: sft.py, preference.py (DPO, KTO, ORPO, CPO, SimPO), reward.py, grpo.py (+ grpo_rewards.py),
vlm.py. Shared: run.py (run directory, manifest, TrainResult), common.py (TRL plumbing), data.py
+ images.py (training data), templates.py + mask_gate.py, preflight.py, resume.py, ranks.py +
distributed.py (multi-process), launch.py (picks the recipe), preview.py (`--dry-run`), and the
scoped TRL patches row_packing.py, dpo_packing.py, labelled_loss.py.
"""
