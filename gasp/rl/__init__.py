"""VST's route to geometry (seed 004): spatial SFT, then RL from rule rewards (GRPO as revised by DAPO).

``box3d`` (rotated 3D box IoU), ``rewards/`` (one file per reward, registered by task kind) and ``dapo`` (the
objective, group advantages, online filtering) are the pieces the RL stage's loop uses.
"""
