"""The controlled small-scale replication of the paper's Fig. 3 and ablation (issue 5).

`plan` fixes what runs, `small` runs it, `qa_eval` scores spatial QA by option
log-likelihood, `head_probe` measures PCK in the heads' embedding space, `aggregate`
reduces seeds to mean +- std. Entry point: `scripts/reproduce_small.py`.
"""
from experiments.replication.plan import ARMS, PRESETS, Plan, make_plan

__all__ = ["ARMS", "PRESETS", "Plan", "make_plan"]
