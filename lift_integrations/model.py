"""``LIFTModel``: a base model plus memories, with absorb, attach/detach and generation."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from lift_integrations.absorb.replay import REPLAY_MAX_NEW_TOKENS, ReplayPrompt
from lift_integrations.absorb.trainer import (
    AbsorbProgress,
)
from lift_integrations.adapters import ADAPTER_KINDS, make_backend
from lift_integrations.adapters.live import LiveAdapters
from lift_integrations.config import LIFTConfig
from lift_integrations.generation import GenerationResult, Generator, PromptInput, TextStream, to_messages
from lift_integrations.locking import ModelLock
from lift_integrations.memory import Memory, NamedMemories
from lift_integrations.mixed import MixedBatches, check_memories
from lift_integrations.prompting import (
    SEPARATOR,
    decode_text,
    document_text,
    encode_chat_with_answer,
    encode_text,
    head_tail,
)
from lift_integrations.structured.grammar import as_grammar
from lift_integrations.validation import (
    GenerationArgs,
    check_context,
    check_generation_args,
    check_int,
    check_max_new_tokens,
    check_prompt,
    check_text,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class _Attached:
    """Sentinel default of ``memory=``: use the memory set with :meth:`LIFTModel.attach`."""

    def __repr__(self) -> str:
        return "ATTACHED"


ATTACHED: Any = _Attached()
ADAPTERS = ADAPTER_KINDS


class LIFTModel:
    """A causal LM that can absorb documents into memories and answer from them.

    The base weights are frozen and shared by every memory; a memory only adds adapter weights. One lock
    serialises everything that runs the model (each generation, and each optimizer step of an
    absorption), so one instance can be shared by threads: requests made with different memories never
    see each other's memory, and requests are served between the steps of a running absorption.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str | None = None,
        adapter: str = "gated_memory",
        adapter_config: Any = None,
    ) -> None:
        for param in model.parameters():
            param.requires_grad_(False)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.adapter = adapter
        from lift_integrations.loading import model_fingerprint

        # Before any adapter is installed: it identifies the base weights that every memory is tied to.
        self.fingerprint = model_fingerprint(model)
        self.backend = make_backend(adapter, model, adapter_config)
        self.lock = ModelLock()
        self._live = LiveAdapters(self.backend, model_name=self.name, fingerprint=self.fingerprint)
        self._generator = Generator(model, tokenizer)
        self._attached: Memory | None = None
        self._mixed = MixedBatches(self.backend, self._live, self.lock, self.using)
        self._replay_answers: dict[ReplayPrompt, str | None] = {}
        self._named = NamedMemories()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        gguf_file: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        adapter: str = "gated_memory",
        adapter_config: Any = None,
        **model_kwargs: Any,
    ) -> LIFTModel:
        """Load a base model: a hub id, a local folder, a GGUF file, or ``None`` for the embedded SmolLM2.

        ``device`` defaults to CUDA when available, else CPU; ``dtype`` to bf16 on CUDA, else fp32.
        """
        from lift_integrations.loading import load_model_and_tokenizer, resolve_device, resolve_dtype

        if adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {adapter!r}; expected one of {ADAPTERS}")
        resolved_device = resolve_device(device)
        resolved_dtype = resolve_dtype(dtype, resolved_device)
        model, tokenizer, display = load_model_and_tokenizer(
            name_or_path, gguf_file=gguf_file, device=resolved_device, dtype=resolved_dtype, **model_kwargs
        )
        return cls(model, tokenizer, name=display, adapter=adapter, adapter_config=adapter_config)

    # Properties -------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def context_window(self) -> int:
        """Tokens the model can attend to (prompt + generated)."""
        window = getattr(self.model.config, "max_position_embeddings", None)
        limit = getattr(self.tokenizer, "model_max_length", None)
        candidates = [w for w in (window, limit) if isinstance(w, int) and 0 < w < 10_000_000]
        return min(candidates) if candidates else 2048

    @property
    def attached_memory(self) -> Memory | None:
        return self._attached

    def count_tokens(self, text: str) -> int:
        return len(encode_text(self.tokenizer, text))

    # Memories ---------------------------------------------------------------------------------------

    def attach(self, memory: Memory | str | os.PathLike[str]) -> None:
        """Make ``memory`` (a :class:`Memory`, a folder path or a hub id) the one used when a call passes
        no ``memory=``; the base weights stay loaded."""
        if not isinstance(memory, (Memory, str, os.PathLike)):
            raise TypeError(
                f"attach() expects a Memory, a folder path or a hub id, got {type(memory).__name__}"
            )
        resolved = self._resolve(memory)
        assert resolved is not None
        with self.lock:
            self._live.weights_for(resolved)  # fail now, not at the first question, if it does not fit
        self._attached = resolved

    def detach(self) -> None:
        """Back to the base model for calls that pass no ``memory=``."""
        self._attached = None

    def _resolve(self, memory: Any) -> Memory | None:
        """The memory a call names: the attached one, ``None``, a :class:`Memory`, or a folder path or hub
        id (loaded once, and again when the folder's memory changes)."""
        if memory is ATTACHED:
            return self._attached
        if memory is None or isinstance(memory, Memory):
            return memory
        if isinstance(memory, (str, os.PathLike)):
            return self._named.get(memory)
        raise TypeError(
            f"memory must be a Memory, a folder path, a hub id or None, got {type(memory).__name__}"
        )

    def release(self, memory: Memory | None) -> None:
        """Free the live adapter built for ``memory`` on this model now (LoRA keeps adapters inside the
        model) rather than when the memory object is garbage-collected; using it again rebuilds the
        adapter from its tensors."""
        if memory is None:
            return
        with self.lock:
            self._live.release(memory)
            self._live.collect()
            self._mixed.clear()

    @contextlib.contextmanager
    def using(self, memory: Memory | None) -> Iterator[None]:
        """Hold the model lock with ``memory`` active (``None``: the base model) for the block."""
        with self.lock:
            weights = self._live.weights_for(memory) if memory is not None else None
            self.backend.activate(weights)
            try:
                yield
            finally:
                self.backend.activate(None)

    # Absorption -------------------------------------------------------------------------------------

    def absorb(
        self,
        documents: Any,
        *,
        config: LIFTConfig | None = None,
        generator: Any = None,
        show_progress: bool | None = None,
        callback: Callable[[AbsorbProgress], None] | None = None,
        into: Memory | str | os.PathLike[str] | None = None,
        resume: bool = True,
        distributed: bool | None = None,
    ) -> Memory:
        """Fine-tune a new memory on ``documents`` and return it.

        ``documents``: a string, or a list of strings, ``(title, text)`` pairs or :class:`Document`.
        ``config``: a :class:`LIFTConfig` (default: ``LIFTConfig.fast()`` on CPU, ``LIFTConfig.dense_qa()`` on
        GPU), fitted to this model's window. ``generator``: where auxiliary QA pairs come from (see
        :func:`~lift_integrations.absorb.qa.resolve_qa_generator`). ``callback`` receives an
        :class:`AbsorbProgress` after every optimizer step; ``show_progress`` draws a tqdm bar on stderr
        (``None``: drawn unless ``$LIFT_PROGRESS`` is ``0``; ``False`` turns it off).
        ``into``: continue from an existing memory's weights (a :class:`Memory`, a folder path or a hub
        id); the result holds its documents and the new ones. Neither the attached memory nor what
        ``memory=None`` means is changed.

        With ``config.checkpoint_dir`` set, progress is saved every ``config.checkpoint_every`` steps; a
        run that was killed continues from its last checkpoint when ``absorb`` is called again with the
        same documents, settings and model (``resume=False`` starts over), giving the same memory as an
        uninterrupted run. Checkpoints are deleted once the absorption has finished.

        The model lock is taken for each optimizer step, not for the whole absorption: requests with
        other memories (or none) are served between steps, and never see the memory being trained.

        ``distributed``: split the work of this one absorption over the processes of a
        ``torch.distributed`` group (started by ``torchrun``; see :mod:`lift_integrations.distributed`).
        ``None`` (default) does so when a group of more than one process is initialised, ``True``
        requires one (initialising it from torchrun's environment if needed), ``False`` absorbs on this
        process alone. Every process must then call ``absorb`` with the same documents, settings and
        model; each step's samples are split between them and the gradients summed, so every process
        returns the same memory, equal to a single-process absorption up to floating-point rounding. A
        process that built different samples makes every process raise
        :class:`~lift_integrations.distributed.DistributedMismatchError` before training. Rank 0 alone
        draws the progress bar and writes checkpoints.

        Every argument (and every ``config`` setting, again: it may have changed since construction) is
        checked before any work: a refused call tokenizes nothing and writes no checkpoint.
        """
        from lift_integrations import absorber

        return absorber.absorb(
            self,
            documents,
            config=config,
            generator=generator,
            show_progress=show_progress,
            callback=callback,
            into=self._resolve(into) if isinstance(into, (str, os.PathLike)) else into,
            resume=resume,
            distributed=distributed,
        )

    def absorb_many(
        self,
        documents: Sequence[Any],
        *,
        config: LIFTConfig | None = None,
        generator: Any = None,
        show_progress: bool | None = None,
        callback: Callable[[AbsorbProgress], None] | None = None,
        slots: int | None = None,
    ) -> list[Memory]:
        """Absorb each item of ``documents`` into its own memory, in one run; memories in the same order.

        An item is what :meth:`absorb` takes for one document (a string, a ``(title, text)`` pair, a
        :class:`Document`), or a list of them for one memory of several documents. Each memory equals
        the one :meth:`absorb` gives for its item with the same settings, up to floating-point rounding.
        On the fused path (``LIFTConfig.engine``) up to ``slots`` memories train side by side in each
        batch (default: as many as ``config.micro_batch_tokens`` allows); otherwise they are absorbed one
        after the other. ``callback`` receives every memory's step reports, ``progress.memory`` naming
        the memory. ``show_progress``: one bar over every memory's steps, as in :meth:`absorb`.
        """
        from lift_integrations import absorber

        return absorber.absorb_many(
            self,
            documents,
            config=config,
            generator=generator,
            show_progress=show_progress,
            callback=callback,
            slots=slots,
        )

    def _base_answers(self, prompts: Sequence[ReplayPrompt]) -> list[str | None]:
        """The base model's greedy answers to replay prompts (``None`` where the answer was cut off),
        remembered per prompt: the base model does not change, so later absorptions reuse them. The
        missing ones are generated in batches (:meth:`generate_batch`)."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._replay_answers))
        results = (
            self.generate_batch(
                [prompt.question for prompt in missing],
                memory=None,
                contexts=[[prompt.context] if prompt.context else None for prompt in missing],
                max_new_tokens=REPLAY_MAX_NEW_TOKENS,
            )
            if missing
            else []
        )
        for prompt, result in zip(missing, results, strict=True):
            finished = result.finish_reason == "stop" and result.text.strip()
            self._replay_answers[prompt] = result.text.strip() if finished else None
        return [self._replay_answers[prompt] for prompt in prompts]

    def _complete_for_qa(self, prompt: str, attempt: int) -> str:
        """The base model as the paper's QA generator: greedy first, sampling on retries."""
        return self.generate(
            prompt, memory=None, max_new_tokens=256, temperature=0.0 if attempt == 0 else 0.8
        ).text

    # Generation -------------------------------------------------------------------------------------

    def _context_text(self, context: Any, memory: Memory | None) -> str | None:
        if context is None:
            return None
        if context == "truncated":
            if memory is None or not memory.documents:
                raise ValueError("context='truncated' needs a memory with absorbed documents")
            return "\n\n".join(document_text(d) for d in memory.documents)
        if isinstance(context, str):
            raise ValueError(f"context must be None, 'truncated' or a list of text chunks, got {context!r}")
        chunks = list(context)
        for index, chunk in enumerate(chunks):
            if not isinstance(chunk, str):
                raise TypeError(f"context chunk {index} must be a str, got {type(chunk).__name__}")
        return "\n\n".join(chunk for chunk in chunks if chunk.strip()) or None

    def prompt_ids(
        self,
        prompt_or_messages: PromptInput,
        *,
        memory: Any = ATTACHED,
        context: Any = None,
        max_new_tokens: int = 256,
    ) -> list[int]:
        """The token ids :meth:`generate` would feed the model (context cut to fit the window)."""
        from lift_integrations.generation import build_prompt_ids

        check_prompt(prompt_or_messages)
        context = check_context(context)
        check_max_new_tokens(max_new_tokens, context_window=self.context_window)
        resolved = self._resolve(memory)
        messages = to_messages(prompt_or_messages)
        text = self._context_text(context, resolved)
        if isinstance(text, str) and context == "truncated":
            separator = encode_text(self.tokenizer, SEPARATOR)
            budget = self.context_window - max_new_tokens - 64
            text = decode_text(
                self.tokenizer, head_tail(encode_text(self.tokenizer, text), max(budget, 16), separator)
            )
        return build_prompt_ids(self.tokenizer, messages, text, self.context_window - max_new_tokens)

    def generate(
        self,
        prompt_or_messages: PromptInput,
        *,
        memory: Any = ATTACHED,
        context: Any = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        top_p: float | None = None,
        grammar: Any = None,
    ) -> GenerationResult:
        """Answer a prompt (or chat messages) with ``memory`` (default: the attached one; ``None``: the base
        model alone). ``context``: ``None``, ``"truncated"`` (head and tail of the memory's documents) or a
        list of text chunks (hybrid mode). Returns the text with token counts and the finish reason.

        ``max_new_tokens``: an integer >= 1, below the context window. ``temperature``: a finite number
        >= 0 (0 decodes greedily). ``top_p``: ``None`` or a number in (0, 1], used when sampling.
        ``stop``: a string or a list of strings that end the answer (not returned); one string is one
        stop string, as in LangChain and Hugging Face, never split into characters. Every argument is
        checked (:mod:`lift_integrations.validation`) before any tokenizing or locking: a bool, NaN or
        infinity where a number is expected raises ``TypeError``/``ValueError`` naming the argument.

        ``grammar``: constrained decoding, a :class:`~lift_integrations.structured.Grammar` or a JSON schema
        (a dict): every token is masked to what the grammar allows, so the answer matches it whenever it
        ends before ``max_new_tokens`` (``finish_reason == "stop"``). Works with any memory.
        """
        return self._run(
            self._generator.generate,
            prompt_or_messages,
            memory,
            context,
            max_new_tokens,
            temperature,
            stop,
            top_p,
            grammar,
        )

    def generate_batch(
        self,
        prompts: Sequence[PromptInput],
        *,
        memory: Any = ATTACHED,
        memories: Sequence[Memory | None] | None = None,
        contexts: Sequence[Any] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        top_p: float | None = None,
        batch_size: int = 16,
        grammar: Any = None,
        grammars: Sequence[Any] | None = None,
    ) -> list[GenerationResult]:
        """Answer several prompts, ``batch_size`` at a time: like calling :meth:`generate` for each
        (``contexts``: one ``context`` per prompt), in far less time where decoding is bound by per-token
        overhead (a small model, a GPU). Prompts of similar length are batched together; the results come
        back in the order of ``prompts``. Greedy answers equal :meth:`generate`'s up to the floating-point
        rounding of padded batches. The arguments are those of :meth:`generate` and are checked the same
        way, every prompt and context before the first is tokenized.

        ``memory``: one memory for every prompt (default: the attached one). Or ``memories``: one entry
        per prompt, a :class:`Memory` or ``None`` (the base model), not both. With Gated Memory a batch
        mixes memories: each row gathers its own memory's weights in the same decode, and a row with
        ``None`` runs the base model exactly (its gate is 0); memories of different Gated Memory settings
        (gate_scale, gate_shift, hidden_multiplier, bias) go into separate batches. With LoRA the prompts
        are split by memory, one batch (or more) per memory. Either way each prompt gets :meth:`generate`'s
        answer with its memory, up to the rounding of padded batches; ``context="truncated"`` uses each
        prompt's own memory's documents. ``grammar`` (one for every prompt) or ``grammars`` (one per
        prompt, ``None`` for free text): constrained decoding as in :meth:`generate`, per row.
        """
        if isinstance(prompts, (str, bytes, bytearray, Mapping)) or not isinstance(prompts, Iterable):
            raise TypeError(
                f"prompts must be a list of prompts (use generate() for one), got {type(prompts).__name__}"
            )
        if contexts is not None and (
            isinstance(contexts, (str, bytes, bytearray, Mapping)) or not isinstance(contexts, Iterable)
        ):
            raise TypeError(f"contexts must be None or a list of contexts, got {type(contexts).__name__}")
        check_int(batch_size, "batch_size", minimum=1)
        prompts = list(prompts)
        contexts = [None] * len(prompts) if contexts is None else list(contexts)
        if len(contexts) != len(prompts):
            raise ValueError(f"got {len(contexts)} contexts for {len(prompts)} prompts")
        if memories is not None and memory is not ATTACHED:
            raise TypeError("pass memory= (one for every prompt) or memories= (one per prompt), not both")
        for index, prompt in enumerate(prompts):
            check_prompt(prompt, f"prompts[{index}]")
        contexts = [check_context(c, f"contexts[{i}]") for i, c in enumerate(contexts)]
        args = self._generation_args(max_new_tokens, temperature, top_p, stop)
        if grammars is not None and grammar is not None:
            raise TypeError("pass grammar= (one for every prompt) or grammars= (one per prompt), not both")
        if grammars is not None and (isinstance(grammars, Mapping) or len(grammars) != len(prompts)):
            raise ValueError("grammars= needs a list with one grammar (or None) per prompt")
        row_grammars = [
            as_grammar(g, f"grammars[{i}]") for i, g in enumerate(grammars or [grammar] * len(prompts))
        ]
        rows = (
            check_memories(memories, len(prompts), self._resolve)
            if memories is not None
            else [self._resolve(memory)] * len(prompts)
        )
        pools = self._mixed.pools(rows)  # builds each memory's adapter: one that does not fit fails now
        ids = [
            self.prompt_ids(prompt, memory=row, context=context, max_new_tokens=args.max_new_tokens)
            for prompt, row, context in zip(prompts, rows, contexts, strict=True)
        ]
        results: dict[int, GenerationResult] = {}
        for batch, guard in self._mixed.batches(rows, pools, lambda i: len(ids[i]), batch_size):
            answers = self._generator.generate_batch(
                [ids[i] for i in batch],
                guard,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                stop=list(args.stop or ()),
                top_p=args.top_p,
                grammars=[row_grammars[i] for i in batch],
            )
            results.update(zip(batch, answers, strict=True))
        return [results[i] for i in range(len(ids))]

    def stream(
        self,
        prompt_or_messages: PromptInput,
        *,
        memory: Any = ATTACHED,
        context: Any = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        top_p: float | None = None,
        grammar: Any = None,
    ) -> TextStream:
        """Like :meth:`generate` (same arguments, checked before any work), but yields text pieces as they
        are produced; the returned stream's ``result`` holds the token counts once it is exhausted."""
        return self._run(
            self._generator.stream,
            prompt_or_messages,
            memory,
            context,
            max_new_tokens,
            temperature,
            stop,
            top_p,
            grammar,
        )

    def _generation_args(
        self, max_new_tokens: Any, temperature: Any, top_p: Any, stop: Any
    ) -> GenerationArgs:
        """The generation settings, checked against this model's window (see :mod:`.validation`)."""
        return check_generation_args(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            context_window=self.context_window,
        )

    def _run(
        self,
        method: Any,
        prompt_or_messages: PromptInput,
        memory: Any,
        context: Any,
        max_new_tokens: Any,
        temperature: Any,
        stop: Any,
        top_p: Any,
        grammar: Any = None,
    ) -> Any:
        """:meth:`generate` or :meth:`stream` (``method``): every argument checked before any work."""
        check_prompt(prompt_or_messages)
        context = check_context(context)
        args = self._generation_args(max_new_tokens, temperature, top_p, stop)
        constraint = as_grammar(grammar)
        resolved = self._resolve(memory)
        ids = self.prompt_ids(
            prompt_or_messages, memory=resolved, context=context, max_new_tokens=args.max_new_tokens
        )
        return method(
            ids,
            self.using(resolved),
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            stop=args.stop,
            top_p=args.top_p,
            grammar=constraint,
        )

    # Scoring ----------------------------------------------------------------------------------------

    def answer_logprob(
        self, question: str, answer: str, *, memory: Any = ATTACHED, context: Any = None
    ) -> float:
        """Total log-probability of ``answer`` as the reply to ``question`` (higher is more likely)."""
        import torch

        check_prompt(question, "question")
        check_text(answer, "answer")
        context = check_context(context)
        resolved = self._resolve(memory)
        prompt = self.prompt_ids(question, memory=resolved, context=context, max_new_tokens=64)
        messages = to_messages(question)
        full, start = encode_chat_with_answer(self.tokenizer, messages, answer)
        ids = prompt + full[start:]
        start = len(prompt)
        with self.using(resolved), torch.inference_mode():
            logits = self.logits(ids)
        logprobs = torch.log_softmax(logits[0, start - 1 : -1].float(), dim=-1)
        targets = torch.tensor(ids[start:], device=logprobs.device)
        return float(logprobs.gather(1, targets[:, None]).sum())

    def logits(self, ids: Sequence[int]) -> torch.Tensor:
        """Raw next-token logits for ``ids`` with whatever memory is active (call inside :meth:`using`)."""
        import torch

        input_ids = torch.tensor([list(ids)], device=self.device)
        return self.model(input_ids=input_ids).logits
