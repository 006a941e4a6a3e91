"""The controlled small-scale replication of the paper's Fig. 3 and its ablation (issue 5): what is run.

Everything that determines the numbers is fixed here, in code, before any test number is
seen; nothing is tuned on the test split. Three presets share one plan and differ only in
size: "full" (issue 9's v3 run, docs/results/v3/PLAN.md; 96.5 min measured on 2 CPU cores
for 2 seeds), "quick" (the acceptance check, minutes for one seed) and "smoke" (the test
suite, seconds). "v2" and "v1" re-make the earlier runs; "gpu" sizes v3 for one GPU.

Splits, disjoint by seed range (`tracks.synthetic.make_synthetic_file`, scene i of a file
with base seed S is rendered from `SeedSequence(S).generate_state(n)[i]` and named
`synth_S_i`): train scenes base seed 1000 (geometric stream and, written as instruction
data, the LM stream), validation base seed 2000 (the trainer's own end-of-run probe),
test base seed 3000 (4000 for the quick and smoke presets, so that checking the pipeline
never touches the reported test split; 8-frame evaluation sequences on an 8 x 8 query grid, Delta-t in 1..24
from the evaluation sampler; every second scene is a same-texture-at-two-depths scene).
The spatial-QA questions are asked on the test scenes.

Arms (identical data streams, steps, seeds and learning rates; only the objective differs):
    A  LM only (the control; every step is an instruction step)
    B  LM + L_corr on the heads
    C  LM + L_corr + L_depth on the heads (the paper's full model)
    D  LM + L_corr + L_depth on each layer's post-RoPE Q/K, no heads (`loss.on=qk`)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

ARMS: dict[str, dict[str, object]] = {
    "A": {"label": "A: LM only", "settings": {"loss": {"corr": False, "depth": False}}},
    "B": {"label": "B: LM + corr", "settings": {"loss": {"corr": True, "depth": False}}},
    "C": {"label": "C: LM + corr + depth", "settings": {"loss": {"corr": True, "depth": True}}},
    "D": {"label": "D: LM + corr + depth on Q/K", "settings": {"loss": {"corr": True, "depth": True, "on": "qk"}}},
    # issue 9: two head designs the paper leaves open (docs/results/v2/PLAN.md says why these two)
    "E": {"label": "E: C with Q/K head pairs", "settings": {"loss": {"corr": True, "depth": True, "on": "qk_heads"}}},
    "F": {"label": "F: C with linear heads", "settings": {"loss": {"corr": True, "depth": True}, "heads": {"hidden": 0}}},
}
SPLIT_SEEDS = {"train": 1000, "val": 2000, "test": 3000}
# the quick and smoke presets check the pipeline on their own test scenes, never the reported test split
DEV_SPLIT_SEEDS = {"train": 1000, "val": 2000, "test": 4000}
# v2 (issue 9): the instruction data has scenes of its own, disjoint from every split
SPLIT_SEEDS_V2 = {**SPLIT_SEEDS, "instruct": 1500}
DEV_SPLIT_SEEDS_V2 = {**DEV_SPLIT_SEEDS, "instruct": 1500}
# v3 (issue 9, second attempt): a fresh test seed range; v2's test split (3000) was looked at twice
SPLIT_SEEDS_V3 = {**SPLIT_SEEDS_V2, "test": 5000}


@dataclass
class Plan:
    preset: str = "full"
    # model: a Qwen2.5-VL built from a config (`gasp.models.tiny`), random init, then the warm-up
    hidden_size: int = 256
    num_hidden_layers: int = 8
    num_attention_heads: int = 8          # head_dim 32, GQA 4:1 as in Qwen2.5-VL-7B (28:4)
    num_key_value_heads: int = 2
    intermediate_size: int = 768
    vision_depth: int = 2
    vision_hidden_size: int = 64
    image_size: int = 224                 # 8 x 8 tokens of 28 px per frame
    # data
    train_scenes: int = 64
    train_frames: int = 48
    val_scenes: int = 4
    test_scenes: int = 32                 # one 8-frame evaluation sequence per scene
    qa_frames: int = 8
    qa_scenes: int | None = None          # test scenes asked spatial questions (None: all)
    # training (every arm and the warm-up)
    warmup_steps: int = 600               # LM-only warm-up, shared by every arm
    warmup_lr: float = 3e-3               # from random weights: a larger step than the arms'
    arm_steps: int = 320                  # full: ~62 min for 3 seeds x 4 arms on 2 shared cores (estimate)
    lr: float = 1e-3
    lora_r: int = 16
    heads_hidden: int = 128
    heads_d_emb: int = 64
    min_frames: int = 4
    max_frames: int = 8
    radius: int = 24
    lm_ratio: float = 0.25
    split_seeds: dict[str, int] = field(default_factory=lambda: dict(SPLIT_SEEDS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    arms: list[str] = field(default_factory=lambda: ["A", "B", "C", "D"])
    # ---- v2 (issue 9); the defaults are v1's behaviour, so v1's plan.json still loads as v1
    version: int = 1
    shake_deg: float = 0.0                # handheld shake of every split's camera (`SyntheticSceneConfig.shake_deg`)
    pan_deg: float = 0.0
    warmup: str = "lora"                  # "lora": v1 (LoRA on the LLM, merged); "full": every weight, vision too
    instruct_scenes: int = 0              # 0: instruction data from the train scenes (v1); else scenes of their own
    instruct_frames: int = 16             # frames rendered per instruction scene (qa_frames of them are shown)
    head_lr_mult: float = 4.0
    # validation sweep: arm C, seed 0, `sweep_steps` steps per [lr, lora_r]; the best mean head-space
    # PCK@2 over layers on the validation split sets lr and lora_r for every arm. Empty: no sweep.
    sweep: list[list[float]] = field(default_factory=list)
    sweep_steps: int = 0
    extra_deltas: list[float] = field(default_factory=list)   # PCK thresholds reported beside delta = 2
    # ---- v3 (issue 9, second attempt); the defaults are v2's behaviour
    vision_pretrain_steps: int = 0        # L_corr on the vision tower's output tokens, train split (`vision_pretrain`)
    vision_pretrain_lr: float = 2e-3
    warmup_vision: bool = True            # False: the warm-up keeps the (pre-trained) vision tower frozen

    @property
    def plan_doc(self) -> str:
        """The pre-registration this plan's run is reported against (its last commit is `plan_sha`)."""
        return "docs/results/small/README.md" if self.version < 2 else f"docs/results/v{self.version}/PLAN.md"

    def model_overrides(self) -> dict[str, int]:
        return {"hidden_size": self.hidden_size, "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
                "intermediate_size": self.intermediate_size, "vision_depth": self.vision_depth,
                "vision_hidden_size": self.vision_hidden_size}

    def scene_config(self, num_frames: int):
        from tracks.synthetic import SyntheticSceneConfig

        s = self.image_size
        return SyntheticSceneConfig(height=s, width=s, num_frames=num_frames, shake_deg=self.shake_deg,
                                    pan_deg=self.pan_deg)

    def train_settings(self, lr: float | None = None, lora_r: int | None = None) -> dict:
        """Trainer settings shared by the warm-up and every arm, as a typed mapping of `gasp.train.config` sections."""
        s = self.image_size
        lr, r = lr or self.lr, int(lora_r or self.lora_r)
        return {"model": {"size": [s, s], "grad_ckpt": False, "mixed_precision": "no"},
                "lora": {"r": r, "alpha": 2 * r},
                "heads": {"hidden": self.heads_hidden, "d_emb": self.heads_d_emb},
                "data": {"grid": 8, "min_frames": self.min_frames, "max_frames": self.max_frames,
                         "radius": self.radius, "lm_ratio": self.lm_ratio, "num_frames_lm": self.qa_frames},
                "optim": {"lr": lr, "head_lr_mult": self.head_lr_mult, "warmup_steps": 10},
                "run": {"eval_every": 0, "save_every": 0, "log_every": 1, "eval_sequences": self.val_scenes}}

    def to_dict(self) -> dict:
        return asdict(self)


V2 = dict(version=2, hidden_size=256, num_hidden_layers=6, image_size=448, shake_deg=10.0, warmup="full",
          train_scenes=48, train_frames=40, val_scenes=4, test_scenes=30, qa_frames=4, instruct_scenes=300,
          warmup_steps=1800, warmup_lr=1e-3, arm_steps=300, lr=1e-3, lora_r=16, min_frames=4, max_frames=6,
          sweep=[[1e-3, 16], [3e-3, 16], [1e-3, 64]], sweep_steps=150, extra_deltas=[1.0, 4.0],
          seeds=[0, 1], arms=list(ARMS), split_seeds=dict(SPLIT_SEEDS_V2))

# v3 (docs/results/v3/PLAN.md): v2 plus a vision tower pre-trained on correspondence (train split) and kept
# frozen in the warm-up, and 50 test scenes of a fresh seed range
V3 = {**V2, "version": 3, "test_scenes": 50, "qa_scenes": 30, "vision_pretrain_steps": 300, "vision_pretrain_lr": 2e-3,
      "warmup_vision": False, "sweep": [[1e-3, 64], [3e-3, 64]], "split_seeds": dict(SPLIT_SEEDS_V3)}

PRESETS: dict[str, Plan] = {
    # issue 9's decisive replication, second attempt (docs/results/v3/PLAN.md)
    "full": Plan(preset="full", **V3),
    "quick": Plan(preset="quick", **{**V3, "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                                     "intermediate_size": 256, "train_scenes": 12, "train_frames": 32,
                                     "val_scenes": 2, "test_scenes": 6, "instruct_scenes": 60,
                                     "warmup_steps": 150, "vision_pretrain_steps": 60, "arm_steps": 40,
                                     "sweep": [[1e-3, 16], [3e-3, 16]],
                                     "sweep_steps": 20, "heads_hidden": 64, "heads_d_emb": 32, "seeds": [0],
                                     "split_seeds": dict(DEV_SPLIT_SEEDS_V2)}),
    "smoke": Plan(preset="smoke", **{**V3, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                     "num_key_value_heads": 1, "intermediate_size": 128, "image_size": 112,
                                     "train_scenes": 3, "train_frames": 26, "val_scenes": 1, "test_scenes": 2,
                                     "qa_frames": 4, "qa_scenes": 1, "instruct_scenes": 3, "instruct_frames": 4,
                                     "warmup_steps": 2, "arm_steps": 2, "vision_pretrain_steps": 2, "lora_r": 4, "sweep": [[1e-3, 4], [3e-3, 4]],
                                     "sweep_steps": 1, "heads_hidden": 32, "heads_d_emb": 16, "min_frames": 3,
                                     "max_frames": 4, "radius": 8, "seeds": [0],
                                     "split_seeds": dict(DEV_SPLIT_SEEDS_V2)}),
    # the same experiment sized for one GPU (`--preset gpu --device cuda`); never run so far (no GPU here)
    "gpu": Plan(preset="gpu", **{**V3, "hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8,
                                 "num_key_value_heads": 2, "intermediate_size": 1536, "vision_depth": 4,
                                 "vision_hidden_size": 128, "train_scenes": 256, "train_frames": 48,
                                 "val_scenes": 8, "test_scenes": 100, "qa_scenes": None, "instruct_scenes": 2000,
                                 "warmup_steps": 8000, "vision_pretrain_steps": 3000, "arm_steps": 3000, "sweep_steps": 1000, "lora_r": 64,
                                 "sweep": [[3e-4, 64], [1e-3, 64], [1e-3, 256]], "heads_hidden": 512,
                                 "heads_d_emb": 128, "max_frames": 8, "seeds": [0, 1, 2]}),
    # issue 9's first attempt (docs/results/v2), kept so that its numbers can be re-made
    "v2": Plan(preset="v2", **V2),
    # issue 5's run (docs/results/small), kept so that its numbers can be re-made
    "v1": Plan(preset="v1", arms=["A", "B", "C", "D"]),
    "v1-quick": Plan(preset="v1-quick", hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                  train_scenes=12, train_frames=32, val_scenes=1, test_scenes=6, warmup_steps=100, arm_steps=60,
                  heads_hidden=64, heads_d_emb=32, split_seeds=dict(DEV_SPLIT_SEEDS)),
    "v1-smoke": Plan(preset="v1-smoke", hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=128, image_size=112, train_scenes=3, train_frames=26, val_scenes=1,
                  test_scenes=2, qa_frames=4, qa_scenes=1, warmup_steps=2, arm_steps=2, lora_r=4,
                  heads_hidden=32, heads_d_emb=16, min_frames=3, max_frames=4, radius=8,
                  split_seeds=dict(DEV_SPLIT_SEEDS)),
}


def make_plan(preset: str = "full", seeds: int | None = None, arms: list[str] | None = None) -> Plan:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    plan = replace(PRESETS[preset])
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"need at least one seed, got {seeds}")
        plan.seeds = list(range(seeds))
    if arms is not None:
        bad = [a for a in arms if a not in ARMS]
        if bad or not arms:
            raise ValueError(f"unknown arm(s) {bad}; known: {', '.join(ARMS)}")
        plan.arms = list(arms)
    return plan
