"""``LIFTConfig``: every knob of absorption, with named presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from lift_integrations.validation import check_text

RECITE_PROMPT = "Given above context, please recite following segment of the context: \n\n\n"
MIN_SEGMENT_LENGTH = 16
"""Shortest segment :meth:`LIFTConfig.fit_to_window` scales down to."""
MIN_SEQ_LENGTH = 64
"""Shortest ``max_seq_length``: :meth:`LIFTConfig.fit_to_window` keeps 64 tokens of each sample for the
recite prompt and chat template, and scales segment and view into the rest, down to a
``MIN_SEGMENT_LENGTH``-token segment without a view."""
WINDOW_MARGIN = 16
"""Tokens of a model's window that training samples leave free (see :meth:`LIFTConfig.fit_to_window`)."""


def _finite(value: Any) -> bool:
    """A real number that is not a bool, NaN or infinite (an int too large for a float counts as
    infinite: the optimizer would overflow on it)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass
class LIFTConfig:
    """How a document is absorbed into a memory.

    Lengths are in tokens. ``segment_length``, ``segment_stride`` and ``context_view_length`` are the
    paper's values for an 8K-token model; :meth:`fit_to_window` scales them down for smaller windows.
    """

    # Segmentation (paper: 2048 / 768).
    segment_length: int = 2048
    segment_stride: int = 768
    # Contextualized training: a head/tail view of the document precedes each segment (paper: 4096).
    contextualized: bool = True
    context_view_length: int = 4096
    recite_prompt: str = RECITE_PROMPT
    # Auxiliary QA.
    qa_per_document: int = 10
    qa_per_1k_tokens: float = 0.0
    """QA pairs per 1,000 tokens of the document, so longer documents get more: a document gets
    ``max(qa_per_document, ceil(qa_per_1k_tokens * tokens / 1000))`` pairs (fewer when the generator
    finds fewer). 0 keeps the count fixed at ``qa_per_document``; QA is off only when both are 0 (or with
    ``qa_generator="none"``)."""
    qa_generator: Literal["extractive", "model", "none"] = "extractive"
    qa_weight: float = 1.0
    """Weight of the QA loss against the segment loss (each a per-sample mean over supervised tokens)."""
    qa_passage_fraction: float = 0.0
    """Share of QA pairs also trained with retrieved-like passages in context (hybrid-mode format)."""
    qa_passages: int = 3
    """Passages in such a context: the one holding the answer and others from the document."""
    general_replay: int = 0
    """Prompts unrelated to the document (the package's replay set) trained with the base model's own
    answers alongside the QA pairs, so the memory leaves unrelated requests as it found them (see
    :mod:`lift_integrations.absorb.replay`)."""
    replay_weight: float | None = None
    """Weight of the replay samples' answer loss; ``None`` uses ``qa_weight``. 0 keeps the replay
    prompts for ``replay_gate_weight`` alone."""
    replay_gate_weight: float = 0.0
    """Gated Memory only: weight of the gate's mean over each replay sample's tokens, added to the loss,
    so the gate learns to stay closed (the base model's own output) on requests the document does not
    concern. Needs ``general_replay`` > 0."""
    replay_kl_weight: float = 0.0
    """Weight of the KL divergence between the base model's next-token distribution and the model's with
    the memory, over every token of each replay sample: the memory is asked to leave unrelated requests
    exactly as it found them. Needs ``general_replay`` > 0."""
    qa_context_length: int = 7800
    """Tokens of the document (head and tail) placed before each QA sample; 0 puts no document in context."""
    # Schedule (paper: 3 epochs on segments, then 5 on segments + QA; one optimizer step per epoch).
    stage1_epochs: int = 3
    stage2_epochs: int = 5
    steps_per_epoch: int | None = 1
    """Optimizer steps per epoch; ``None`` makes one step per ``batch_size`` samples."""
    batch_size: int = 16
    """Samples per forward pass (micro-batch) at most; gradients accumulate up to the optimizer step. With
    ``steps_per_epoch=1`` (the paper) it changes speed only, not what is computed."""
    share_prefixes: bool = True
    """Run a long start that several samples of a step share (the QA samples' document view) once for
    all of them. The losses and gradients are those of computing each sample whole (up to float
    rounding); off, every sample is computed whole."""
    micro_batch_tokens: int | None = None
    """Padded tokens per forward pass at most; ``None``: 65,536 on CUDA, 8,192 elsewhere."""
    # Optimizer (paper: AdamW (0.9, 0.98), eps 1e-8, lr 1e-3 constant, wd 1e-4, clip 1.0).
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    max_seq_length: int = 7800
    gradient_checkpointing: bool = False
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Matrix precision while training: ``auto`` uses bf16 autocast on CUDA and on CPUs with native bf16
    (AMX or AVX512-BF16), fp32 elsewhere. The memory's parameters always stay fp32."""
    compile: bool = False
    """Compile training with ``torch.compile``: whole decoder layers (attention, rotary embedding, norms,
    MLP and Gated Memory fused), or the norms, MLPs and Gated Memory alone for LoRA, with gradient
    checkpointing, and where shared prefixes run through the key/value cache (sliding-window models);
    see :mod:`lift_integrations.absorb.compilation`.
    Worth it on a GPU that absorbs many documents: the first absorption in a process pays for compiling
    (about 110 s on an H200), later ones run about 1.4x faster (docs/benchmarks.md). Results equal eager
    training up to rounding."""
    engine: Literal["auto", "fused", "eager"] = "auto"
    """How training runs. ``fused``: every step at a static shape, one optimizer launch for the whole
    memory, losses read every few dozen steps, and on CUDA each step replayed as a CUDA graph (see
    :mod:`lift_integrations.absorb.fused`); it serves Gated Memory without replay gate or KL terms,
    checkpoints or several processes. ``eager``: the step-by-step loop, which serves everything and
    shares prefixes between samples. ``auto``: fused on CUDA where it applies (on a CPU, which computes
    rather than waits on launches, eager). Both give the same memory up to floating-point rounding."""
    seed: int = 0
    """Seeds initialisation, context views, QA picks and shuffling: a CPU run on one thread is bitwise
    reproducible (several threads may differ in the last bits)."""
    # Checkpointing (off by default): where and how often absorption saves its progress.
    checkpoint_dir: str | None = None
    """Folder for resumable checkpoints; ``None`` turns checkpointing off. An absorption killed midway
    resumes from its last checkpoint when it is run again with the same documents, settings and model.
    Never saved with a memory (it names a local path)."""
    checkpoint_every: int = 50
    """Optimizer steps between checkpoints (when ``checkpoint_dir`` is set)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.adam_betas, list):  # JSON gives a list; anything else is left to validate()
            self.adam_betas = tuple(self.adam_betas)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that is out of range or of the wrong type.

        Numbers refuse bools (``True`` is an ``int`` to Python), NaN and infinities; integers refuse
        floats. Run on construction and again by :meth:`LIFTModel.absorb`, which catches a setting
        changed after construction.
        """
        for name in ("segment_length", "segment_stride", "batch_size", "checkpoint_every", "qa_passages"):
            self._check_int(name, minimum=1)
        self._check_int("max_seq_length", minimum=1)
        if self.max_seq_length < MIN_SEQ_LENGTH:
            raise ValueError(
                f"LIFTConfig.max_seq_length must be at least {MIN_SEQ_LENGTH} tokens (room for a "
                f"{MIN_SEGMENT_LENGTH}-token segment and the prompt around it), got {self.max_seq_length}"
            )
        if self.segment_stride > self.segment_length:
            raise ValueError(
                f"LIFTConfig.segment_stride ({self.segment_stride}) must not exceed segment_length "
                f"({self.segment_length}): tokens between segments would never be trained on"
            )
        for name in (
            "context_view_length",
            "qa_per_document",
            "general_replay",
            "stage1_epochs",
            "stage2_epochs",
            "warmup_steps",
            "qa_context_length",
            "seed",
        ):
            self._check_int(name, minimum=0)
        if self.stage1_epochs + self.stage2_epochs == 0:
            raise ValueError("LIFTConfig needs at least one epoch (stage1_epochs + stage2_epochs > 0)")
        for name in ("micro_batch_tokens", "steps_per_epoch"):
            if getattr(self, name) is not None:
                self._check_int(name, minimum=1, optional=True)
        for name in ("learning_rate", "adam_eps", "max_grad_norm"):
            if not _finite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(
                    f"LIFTConfig.{name} must be a positive finite number, got {getattr(self, name)!r}"
                )
        fraction = self.qa_passage_fraction
        if not _finite(fraction) or not 0 <= fraction <= 1:
            raise ValueError(f"LIFTConfig.qa_passage_fraction must be a number in [0, 1], got {fraction!r}")
        for name in (
            "weight_decay",
            "qa_weight",
            "qa_per_1k_tokens",
            "replay_gate_weight",
            "replay_kl_weight",
            "replay_weight",
        ):
            value = getattr(self, name)
            if value is None and name == "replay_weight":
                continue
            if not _finite(value) or value < 0:
                accepted = "a non-negative finite number" + (" or None" if name == "replay_weight" else "")
                raise ValueError(f"LIFTConfig.{name} must be {accepted}, got {value!r}")
        for name in ("replay_gate_weight", "replay_kl_weight"):
            if getattr(self, name) > 0 and self.general_replay == 0:
                raise ValueError(f"LIFTConfig.{name} needs replay prompts: set general_replay > 0")
        betas = self.adam_betas
        if (
            not isinstance(betas, tuple)
            or len(betas) != 2
            or not all(_finite(b) and 0 <= b < 1 for b in betas)
        ):
            raise ValueError(f"LIFTConfig.adam_betas must be two numbers in [0, 1), got {betas!r}")
        if not isinstance(self.precision, str) or self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"LIFTConfig.precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        path = self.checkpoint_dir
        if path is not None and (not isinstance(path, str) or not path):
            raise ValueError(
                f"LIFTConfig.checkpoint_dir must be a non-empty path string or None, got {path!r}"
            )
        for name in ("contextualized", "gradient_checkpointing", "share_prefixes", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"LIFTConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.engine, str) or self.engine not in ("auto", "fused", "eager"):
            raise ValueError(f"LIFTConfig.engine must be 'auto', 'fused' or 'eager', got {self.engine!r}")
        if not isinstance(self.qa_generator, str) or self.qa_generator not in ("extractive", "model", "none"):
            raise ValueError(
                f"LIFTConfig.qa_generator must be 'extractive', 'model' or 'none', got {self.qa_generator!r}"
            )
        try:
            check_text(self.recite_prompt, "LIFTConfig.recite_prompt")
        except TypeError as error:  # every LIFTConfig error is a ValueError
            raise ValueError(str(error)) from None
        if not isinstance(self.extra, dict):
            raise ValueError(f"LIFTConfig.extra must be a dict, got {type(self.extra).__name__}")

    def _check_int(self, name: str, *, minimum: int, optional: bool = False) -> None:
        value = getattr(self, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            kind = "a positive integer" if minimum == 1 else "a non-negative integer"
            kind += " or None" if optional else ""
            raise ValueError(f"LIFTConfig.{name} must be {kind}, got {value!r}")

    # Presets ---------------------------------------------------------------------------------------

    @classmethod
    def paper(cls, **overrides: Any) -> LIFTConfig:
        """The published recipe (arXiv 2502.14644, LooGLE runs): 2048/768 segments, contextualized
        training with a 4096-token view, 10 QA pairs per document, 3 + 5 epochs of one AdamW step each
        at lr 1e-3."""
        return cls(**overrides)

    @classmethod
    def fast(cls, **overrides: Any) -> LIFTConfig:
        """For a CPU laptop: short segments and views, several optimizer steps per epoch and a higher
        learning rate, so a 2,000-token document is absorbed in under three minutes on two cores.
        The epochs and learning rate were chosen by ``benchmarks/tune_recipe.py`` (see docs/tuning.md)."""
        settings: dict[str, Any] = dict(
            segment_length=256,
            segment_stride=192,
            context_view_length=96,
            qa_per_document=24,
            qa_context_length=0,
            stage1_epochs=1,
            stage2_epochs=6,
            steps_per_epoch=None,
            batch_size=4,
            learning_rate=3e-3,
            max_seq_length=1024,
        )
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def for_device(cls, device_type: str, **overrides: Any) -> LIFTConfig:
        """The default recipe for a device: :meth:`fast` on a CPU, :meth:`dense_qa` on anything else."""
        return cls.fast(**overrides) if device_type == "cpu" else cls.dense_qa(**overrides)

    @classmethod
    def dense_qa(cls, **overrides: Any) -> LIFTConfig:
        """:meth:`fast`'s schedule with dense extractive QA: at least 400 pairs per document and 60 per
        1,000 tokens, about two per sentence. The best recipe measured for small models (docs/tuning.md,
        sweep 10: on three SQuAD articles with SmolLM2-135M the memory alone matches RAG and the hybrid
        reaches 1.8x RAG, both well above their controls). It trains several times the tokens of
        :meth:`fast` (about a minute per 4,000-token article on an H200), so it is the default on GPUs
        (:meth:`for_device`), while CPUs keep :meth:`fast`."""
        return cls.fast(**{"qa_per_document": 400, "qa_per_1k_tokens": 60.0, **overrides})

    def qa_pairs_for(self, tokens: int) -> int:
        """How many QA pairs to ask the generator for, for a document of ``tokens`` tokens."""
        return max(self.qa_per_document, math.ceil(self.qa_per_1k_tokens * tokens / 1000))

    # Fitting to a model ----------------------------------------------------------------------------

    def fit_to_window(self, window: int) -> LIFTConfig:
        """A copy whose sample lengths fit a model with a ``window``-token context.

        The paper's lengths assume an 8K window (a 4096-token view + a 2048-token segment < 7800). For a
        smaller window every length is scaled by the same factor, keeping the stride/segment ratio.
        """
        smallest = MIN_SEQ_LENGTH + WINDOW_MARGIN
        if window < smallest:
            raise ValueError(
                f"the model's context window ({window} tokens) is too small for LIFT (needs >= {smallest})"
            )
        budget = min(self.max_seq_length, window - WINDOW_MARGIN)
        needed = self.segment_length + (self.context_view_length if self.contextualized else 0) + 64
        if needed <= budget and self.qa_context_length <= budget:
            return dataclasses.replace(self, max_seq_length=budget)
        scale = min(1.0, (budget - 64) / max(1, needed - 64))
        segment = max(MIN_SEGMENT_LENGTH, int(self.segment_length * scale))
        stride = max(1, min(segment, int(self.segment_stride * scale)))
        view = int(self.context_view_length * scale)
        return dataclasses.replace(
            self,
            segment_length=segment,
            segment_stride=stride,
            context_view_length=view,
            qa_context_length=min(self.qa_context_length, max(0, budget - 256)),
            max_seq_length=budget,
        )

    # Serialisation ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["adam_betas"] = list(self.adam_betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LIFTConfig:
        if not isinstance(data, dict):
            raise TypeError(f"LIFTConfig.from_dict expects a dict, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown LIFTConfig fields: {sorted(unknown)}")
        return cls(**data)
