"""The schema of an experiment config (the `data`, `model`, `loss`, `train` and `eval` sections):
one tree of schema nodes that validates a config and writes docs/config.md.

It is built from the registries each time it is asked for (:func:`config_schema`), so a loss
term, fusion, gate or transform registered after import is a valid choice with its own options.
"""

from __future__ import annotations

from mmseg_heads.data.augment import AugmentSchema
from mmseg_heads.data.transforms import TTA_FLIPS
from mmseg_heads.losses.multitask import WEIGHTINGS
from mmseg_heads.losses.task_loss import LOSS_TERMS
from mmseg_heads.models.schema import model_schema
from mmseg_heads.schema import FILL, Field, ListOf, MapOf, OneOf, Struct, ascending

#: ``train.compile`` values that name a ``torch.compile`` mode.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "poly", "step", "constant")


def _term(term: type) -> OneOf:
    """A loss term's entry: a bare weight, or ``{weight, **its options}``."""
    return OneOf(
        [
            Field(float, minimum=0.0),
            Struct({"weight": Field(float, default=1.0, minimum=0.0), **term.options}),
        ],
        default=None,
        doc=term.doc,
    )


def task_loss_schema() -> Struct:
    """The loss terms of one task, one entry per registered term (read at call time)."""
    return Struct(
        {name: _term(LOSS_TERMS.get(name)) for name in LOSS_TERMS.names()},
        doc="loss terms of one task (default `{ce: 1.0, dice: 1.0}`)",
    )


def config_schema() -> Struct:
    """The whole config's schema, built from the registries each time (so a fusion, head, loss
    term or augmentation registered after import is a valid choice)."""
    return Struct(
        {
            "data": Field(str, doc="data spec file (relative to this config)"),
            "model": model_schema(),
            "loss": Struct(
                {
                    "task_weighting": Field(
                        str,
                        default="fixed",
                        choices=WEIGHTINGS,
                        doc="fixed (`task_weights`) or uncertainty (learned per-task weights, Kendall et al. 2018)",
                    ),
                    "task_weights": MapOf(
                        Field(float, minimum=0.0), default=dict, doc="`{task: weight}`, default 1"
                    ),
                },
                extra=task_loss_schema(),
                default=FILL,
                doc="per-task loss terms by task name, plus the keys below",
            ),
            "train": Struct(
                {
                    "epochs": Field(
                        int, default=40, minimum=1, doc="passes over the training split"
                    ),
                    "steps": Field(
                        int,
                        default=None,
                        minimum=1,
                        doc="optimizer steps to train instead of `epochs` (MMSegmentation's "
                        "iterations): as many epochs as they need, the last cut short; the LR "
                        "schedule spans them and `checkpoint_every` counts them",
                    ),
                    "batch_size": OneOf(
                        [Field(int, minimum=1), Field(str, choices=("auto",))],
                        default=8,
                        doc="samples per step and process; `auto`: the largest that fits the GPU's "
                        "memory budget, or the fastest per sample on the CPU (printed)",
                    ),
                    "crop": Field(
                        int, default=256, minimum=32, doc="side of the random square training crop"
                    ),
                    "hflip": Field(bool, default=True, doc="random left-right flips"),
                    "vflip": Field(bool, default=False, doc="random up-down flips"),
                    "augment": AugmentSchema(),
                    "augment_on": Field(
                        str,
                        default="cpu",
                        choices=("cpu", "gpu"),
                        doc="where the geometric and intensity transforms run: `cpu`, per sample "
                        "in the loader's workers; `gpu`, on whole batches on the training device "
                        "(the loader only cuts windows), for when the workers cannot keep up",
                    ),
                    "crop_foreground": Field(
                        float,
                        default=0.0,
                        minimum=0.0,
                        maximum=1.0,
                        doc="chance that a crop is centred near a random labelled foreground pixel "
                        "(a class first, then a pixel); otherwise the crop is placed uniformly",
                    ),
                    "resize": OneOf(
                        [
                            Field(int, minimum=8),
                            ListOf(
                                Field(int, minimum=8),
                                min_items=2,
                                max_items=2,
                                check=ascending,
                            ),
                        ],
                        default=None,
                        doc="training: scale each image so its shorter side is N px, or a side drawn "
                        "from [low, high] (scale jitter); default: native size",
                    ),
                    "lr": Field(float, default=1e-3, minimum=0.0),
                    "weight_decay": Field(float, default=1e-4, minimum=0.0),
                    "optimizer": Field(str, default="adamw", choices=("adamw", "adam", "sgd")),
                    "grad_clip": Field(
                        float, default=None, minimum=0.0, doc="clip the gradient norm to this value"
                    ),
                    "schedule": Field(
                        str,
                        default="cosine",
                        choices=SCHEDULES,
                        doc="LR schedule over optimizer steps: cosine to 0, poly (power 0.9), step, constant",
                    ),
                    "warmup_epochs": Field(
                        float,
                        default=0.0,
                        minimum=0.0,
                        doc="linear LR warm-up from 0 (fractions allowed)",
                    ),
                    "step_epochs": Field(
                        int,
                        default=30,
                        minimum=1,
                        doc="`schedule: step`: multiply the LR by 0.1 every N epochs",
                    ),
                    "encoder_lr_mult": Field(
                        float,
                        default=1.0,
                        minimum=0.0,
                        doc="encoders' LR = lr × this (e.g. 0.1 for pretrained)",
                    ),
                    "accumulate": Field(
                        int,
                        default=1,
                        minimum=1,
                        doc="gradient accumulation: batches per optimizer step",
                    ),
                    "freeze_encoders_epochs": Field(
                        int,
                        default=0,
                        minimum=0,
                        doc="train the first N epochs with encoders frozen (weights and BatchNorm statistics)",
                    ),
                    "unfreeze_batch_size": Field(
                        int,
                        default=None,
                        minimum=1,
                        doc="batch size once encoders unfreeze (default: batch_size)",
                    ),
                    "val_every": Field(
                        int,
                        default=None,
                        minimum=1,
                        doc="validate every N optimizer steps of the run (MMSegmentation's "
                        "val_interval), and at its end; best.pt follows each validation; "
                        "default: at the end of every epoch",
                    ),
                    "log_every": Field(
                        int,
                        default=None,
                        minimum=1,
                        doc="read the per-batch log (TP/FP/FN, loss parts, non-finite losses) back "
                        "from the device every N batches and at each epoch's end; default: every "
                        "batch on a CPU, every 50 on a GPU (a read waits for the GPU)",
                    ),
                    "checkpoint_every": Field(
                        int,
                        default=0,
                        minimum=0,
                        doc="also keep checkpoints/epoch_<N>.pt every N epochs, or with `steps` "
                        "checkpoints/step_<N>.pt every N optimizer steps (0: off)",
                    ),
                    "keep_checkpoints": Field(
                        int,
                        default=None,
                        minimum=1,
                        doc="keep only the newest N epoch_<N>.pt (or step_<N>.pt) files (best.pt "
                        "and last.pt always stay); default: all",
                    ),
                    "precision": Field(
                        str,
                        default="auto",
                        choices=PRECISIONS,
                        doc="auto: bf16 autocast where the CPU/GPU supports it, else fp16 + loss "
                        "scaling on CUDA, else fp32",
                    ),
                    "workers": Field(int, default=2, minimum=0, doc="data loader processes"),
                    "threads": OneOf(
                        [Field(int, minimum=1), Field(str, choices=("auto",))],
                        default="auto",
                        doc="CPU threads of torch's operators; `auto`: the usable cores that are "
                        "idle at start (a core busy with other work slows every step), logged",
                    ),
                    "compile": OneOf(
                        [Field(bool), Field(str, choices=("auto", *COMPILE_MODES))],
                        default="auto",
                        doc="run training steps through torch.compile: `auto` times eager, "
                        "default and reduce-overhead (CUDA Graphs) at start on a GPU and keeps "
                        "the fastest, never compiles on a CPU (no gain there, docs/performance.md "
                        "§9); `true`: default mode; or a mode's name; the run log says the choice",
                    ),
                    "sync_batchnorm": Field(
                        bool,
                        default=False,
                        doc="under torchrun: BatchNorm statistics over all processes (CUDA only)",
                    ),
                    "tensorboard": Field(
                        bool,
                        default=False,
                        doc="also log to RUN_DIR/tensorboard (needs the `tensorboard` extra)",
                    ),
                    "seed": Field(int, default=0),
                    "out": Field(
                        str, default=None, doc="run directory (default `runs/<config name>`)"
                    ),
                },
                default=FILL,
            ),
            "eval": Struct(
                {
                    "beta": Field(float, default=1.0, minimum=0.0, doc="F-beta's beta"),
                    "split": Field(
                        str, default="val", doc="split evaluated each epoch and by `evaluate`"
                    ),
                    "select_by": Field(
                        str,
                        default="mean_foreground_f",
                        doc="`mean_foreground_f` or `<task>` (its macro foreground F)",
                    ),
                    "window": Field(
                        int,
                        default=None,
                        minimum=1,
                        doc="sliding-window side in pixels, a multiple of the model's largest "
                        "stride; omitted: whole images (see Inference in predict_export.md)",
                    ),
                    "overlap": Field(
                        float,
                        default=0.5,
                        minimum=0.0,
                        check=lambda v: None if v < 1 else "must be below 1",
                        doc="fraction of a window shared with its neighbour (with `window`)",
                    ),
                    "tta": ListOf(
                        Field(str, choices=tuple(TTA_FLIPS)),
                        default=[],
                        check=lambda v: None if len(set(v)) == len(v) else "names a flip twice",
                        doc="test-time flips whose probabilities are averaged, e.g. "
                        "`[hflip, vflip]` (every combination: 4 passes)",
                    ),
                    "nesting": Field(
                        str,
                        default="both",
                        choices=("on", "off", "both"),
                        doc="the data spec's `inside` rules on predictions: `on` (masks and scores "
                        "nested), `off`, or `both` (masks and scores as the model gives them, "
                        "nested scores beside them)",
                    ),
                },
                default=FILL,
            ),
        }
    )
