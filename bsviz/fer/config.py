"""What a training run depends on, as plain data: ``TrainConfig``, saved in every checkpoint.

Kept apart from ``train`` so that reading a config (the CLI's flags, a checkpoint's card)
imports no training code.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("image", "blendshape", "two_stream")  # the networks (``models.build_network``)
OPTIMIZERS = ("adamw", "sgd")

# Fields a resumed run may change: where things are and how they are shown, and the epoch count.
RESUMABLE_CHANGES = ("data_dir", "out_dir", "cache_dir", "resume", "progress", "epochs", "device")
FILE_FIELDS = ("labels", "synth", "init_image", "init_blendshape")  # the same file, however named


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint.

    The networks read the face crops of the ``labels`` file when there is one (the crops the
    photo path makes, ``bsviz label``), else the dataset's images as they are.
    """

    kind: str = "image"                  # image | blendshape | two_stream
    dataset: str = "fer2013"             # fer2013 | ck+
    data_dir: str | None = None          # holds fer2013/ and ck+48/ (required to train)
    labels: str | None = None            # label file (bsviz label): blendshape labels and crops
    blendshape_labels: str | None = None  # the weights learnt: None, MediaPipe's scores mapped
    #                                      to the rig; "fit": the rig fitted to the landmarks
    synth: str | None = None             # blendshape stream: synthetic renders (bsviz synth's
    #                                      synth.npz) added to the training images, exact weights
    out_dir: str = "runs/train"
    cache_dir: str = "runs/cache"        # decoded images, shared by runs on the same data
    fold: int = 0                        # CK+: which subject-independent fold is the test set
    n_folds: int = 10
    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "adamw"             # adamw | sgd (Nesterov, momentum 0.9)
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    mixup: float = 0.0                   # Beta(a, a) mixing of image pairs and their labels; 0: off
    erasing: float = 0.0                 # chance of erasing a random rectangle of an image
    ema: float = 0.0                     # per-step decay of the weights' moving average; 0: off
    #                                      (at step t it is min(ema, (1 + t) / (10 + t)))
    blendshape_loss_weight: float = 1.0  # two-stream: weight of the auxiliary L2 loss
    init_image: str | None = None        # checkpoints to start the streams from
    init_blendshape: str | None = None
    freeze_epochs: int = 3               # two-stream: epochs training only the fusion layer
    finetune_lr: float = 3e-4            # two-stream: learning rate once unfrozen
    augment: bool = True
    widths: tuple[int, ...] = (32, 32, 64, 64, 128, 128, 256)
    pool_after: tuple[int, ...] = (0, 1, 3, 5)  # convolutions (0-based) followed by 2x2 max-pool
    feature_dim: int = 256
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda
    amp: str = "auto"                    # auto | bf16 | off
    resume: bool = False
    progress: bool = True
    limit: int | None = None             # use only this many training images, classes in proportion

    def __post_init__(self) -> None:
        self.widths, self.pool_after = tuple(self.widths), tuple(self.pool_after)
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.dataset not in ("fer2013", "ck+"):
            raise ValueError(f"dataset must be 'fer2013' or 'ck+', got {self.dataset!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.blendshape_labels not in (None, "fit"):
            raise ValueError("blendshape_labels must be None (MediaPipe's scores) or 'fit', "
                             f"got {self.blendshape_labels!r}")
        if self.synth and self.kind != "blendshape":
            raise ValueError("synth renders have exact weights but no expression class: "
                             f"only the blendshape stream trains on them, not {self.kind!r}")
