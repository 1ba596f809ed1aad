"""What a training run is: its settings (those that decide the weights, checked on --resume), and
the names of its files."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from edge_slm.common.errors import EdgeError

REPORT_SCHEMA = "edge-slm.train-report"
COMPARE_SCHEMA = "edge-slm.train-compare"
STATE_SCHEMA = "edge-slm.trainer-state"
SCHEMA_VERSION = 1
REPORT_FILE = "train_report.json"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.npz"
WEIGHTS_FILE = "tf_model.h5"
CHECKPOINT_PREFIX = "checkpoint-"
SPEED_WARMUP_STEPS = 3       # step 1 traces the graph; 2-3 still allocate
EVAL_BATCH_SIZE = 64
DEFAULT_EVAL_EVERY = 200
DEFAULT_COMPARE_STEPS = 30
COMPARE_BATCH_SIZE = 16
COMPARE_SEQ_LEN = 128
# A speed child exits right after it answers; longer than this means it hangs in teardown.
CHILD_EXIT_GRACE_SECONDS = 60.0
RANDOM_INIT_NOTE = ("random initialisation: training speed does not depend on the weight values, so the "
                    "comparison needs no pretrained checkpoint (and no hub); accuracy is not measured")
# The weights are trained for a few steps but never evaluated: not "random weights", just no dev set.
SPEED_ONLY_ACCURACY = "not measured (a training-speed comparison has no dev set)"


@dataclass(frozen=True)
class TrainSettings:
    """What decides the trained weights (a resume must match them) plus eval/target choices."""
    epochs: int = 1
    max_steps: Optional[int] = None        # overrides epochs, as in transformers' Trainer
    batch_size: int = 32
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1              # share of the steps with a linearly rising learning rate
    seq_len: Optional[int] = None          # None: the registry's, else 128 (capped by the model)
    max_train_examples: Optional[int] = None
    seed: int = 0
    eval_every: int = DEFAULT_EVAL_EVERY   # evaluate and checkpoint every N steps, and at the end
    target_accuracy: Optional[float] = None

    # Changing these would change the weights, so a resume refuses to.
    DETERMINING = ("epochs", "max_steps", "batch_size", "learning_rate", "warmup_ratio", "seq_len",
                   "max_train_examples", "seed")

    def check(self) -> None:
        for name, value, least in (("--epochs", self.epochs, 1), ("--max-steps", self.max_steps, 1),
                                   ("--batch-size", self.batch_size, 1), ("--seq-len", self.seq_len, 2),
                                   ("--max-train-examples", self.max_train_examples, 1),
                                   ("--eval-every", self.eval_every, 1), ("--seed", self.seed, 0)):
            if value is None and name in ("--max-steps", "--seq-len", "--max-train-examples"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise EdgeError(f"{name} must be an integer of at least {least}, got {value!r}",
                                f"e.g. {name} {max(least, 2)}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise EdgeError(f"--learning-rate must be within (0, 1), got {self.learning_rate!r}",
                            "e.g. --learning-rate 3e-5")
        if not (isinstance(self.warmup_ratio, (int, float)) and 0 <= self.warmup_ratio < 1):
            raise EdgeError(f"--warmup-ratio must be within [0, 1), got {self.warmup_ratio!r}",
                            "e.g. --warmup-ratio 0.1")
        if self.target_accuracy is not None and not (0 < self.target_accuracy <= 1):
            raise EdgeError(f"--target-accuracy must be a fraction within (0, 1], got {self.target_accuracy!r}",
                            "e.g. --target-accuracy 0.85")

    def as_dict(self) -> dict:
        return asdict(self)
