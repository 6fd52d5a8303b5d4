"""Training data of interventions: text chunks for continued pre-training, prompt -> answer pairs for
task fine-tuning (loss on the answer tokens only).

Data comes through :mod:`seqedit.data`: WikiText as the paragraphs of an explicit split (``wikitext2:valid``,
``wikitext2:test``; a bare ``wikitext2`` is the valid split, as before split names; ``read_split``: headings and
blank lines dropped, one paragraph per line), tasks as GLUE-style examples (``read_classification`` of the registered
file or of a ``<task>.json``; labels with GLUE's meaning), each rendered as text with a fixed template, e.g. SST-2:
``"Review: <sentence>\nSentiment:" -> " positive"``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from seqedit.data import (
    TextClassificationExample,
    dataset_path,
    load_text,
    parse_split,
    read_classification,
    read_split,
)
from seqedit.models.tokens import PromptTargetBatch, encode_prompt_targets

# Text names accepted as intervention data (a bare "wikitext2" is the valid split: BARE_WIKITEXT_SPLIT).
TEXT_CORPORA: tuple[str, ...] = ("wikitext2", "wikitext2:valid", "wikitext2:test")


@dataclass(frozen=True)
class TaskFormat:
    """How a task example becomes ``prompt -> answer``."""

    template: str  # str.format with the example's fields
    answers: dict[int, str]  # label index -> answer word


TASK_FORMATS: dict[str, TaskFormat] = {
    "sst2": TaskFormat("Review: {sentence}\nSentiment:", {0: "negative", 1: "positive"}),
    "cola": TaskFormat("Sentence: {sentence}\nGrammatical:", {0: "no", 1: "yes"}),
    "mrpc": TaskFormat("Sentence 1: {sentence1}\nSentence 2: {sentence2}\nSame meaning:", {0: "no", 1: "yes"}),
    # GLUE RTE: 0 = entailment, 1 = not_entailment
    "rte": TaskFormat("Premise: {sentence1}\nHypothesis: {sentence2}\nEntailed:", {0: "yes", 1: "no"}),
}


def corpus_text(name_or_path: str | Path) -> str:
    """A corpus's paragraphs, one per line."""
    return "\n".join(load_text(name_or_path))


class TextChunks:
    """A text corpus tokenised once and cut into non-overlapping ``seq_len`` chunks."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text: str, seq_len: int) -> None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        n_chunks = len(ids) // seq_len
        if n_chunks < 2:
            raise ValueError(f"the corpus has {len(ids)} tokens: too few for two chunks of {seq_len}")
        self.chunks = torch.tensor(ids[: n_chunks * seq_len], dtype=torch.long).view(n_chunks, seq_len)

    def __len__(self) -> int:
        return int(self.chunks.shape[0])

    def batch(self, indices: list[int]) -> PromptTargetBatch:
        """Every position predicts the next token (labels shifted into the logits' positions)."""
        input_ids = self.chunks[indices]
        labels = torch.full_like(input_ids, -100)
        labels[:, :-1] = input_ids[:, 1:]
        width = input_ids.shape[1]
        return PromptTargetBatch(input_ids, torch.ones_like(input_ids), labels, [1] * len(indices), [width - 1] * len(indices))


class TaskExamples:
    """Prompt -> answer pairs of a GLUE-style task."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        examples: Sequence[TextClassificationExample],
        fmt: TaskFormat,
        seq_len: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.pairs: list[tuple[str, str]] = []
        for example in examples:
            if example.label not in fmt.answers:
                raise ValueError(f"{example.task} example has label {example.label}; expected one of {list(fmt.answers)}")
            values = {name: text.strip() for name, text in example.fields.items()}
            prompt = fmt.template.format(**values)
            if len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > seq_len - 4:
                prompt = fmt.template.format(**self._shortened(values, fmt, seq_len))
            self.pairs.append((prompt, fmt.answers[example.label]))
        if len(self.pairs) < 2:
            raise ValueError("a task needs at least two examples")

    def _shortened(self, values: Mapping[str, str], fmt: TaskFormat, seq_len: int) -> dict[str, str]:
        """Cut every text field to an equal share of the token budget, so the template and answer stay."""
        empty = fmt.template.format(**dict.fromkeys(values, ""))
        overhead = len(self.tokenizer(empty, add_special_tokens=False)["input_ids"])
        share = max(1, (seq_len - 4 - overhead) // len(values))
        out = {}
        for name, text in values.items():
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out[name] = str(self.tokenizer.decode(ids[:share])) if len(ids) > share else text
        return out

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, indices: list[int]) -> PromptTargetBatch:
        prompts = [self.pairs[i][0] for i in indices]
        answers = [self.pairs[i][1] for i in indices]
        return encode_prompt_targets(self.tokenizer, prompts, answers)


Dataset = TextChunks | TaskExamples


def load_dataset(tokenizer: PreTrainedTokenizerBase, data: str, seq_len: int) -> tuple[Dataset, str]:
    """``(dataset, description)`` for a named corpus/task or a file path."""
    if data in TEXT_CORPORA:
        split = parse_split(data, "intervention")
        text = "\n".join(read_split(split))
        return TextChunks(tokenizer, text, seq_len), f"text:{data}" + ("" if data == split.name else f" ({split.name})")
    if data in TASK_FORMATS:
        examples = read_classification(dataset_path(data), task=data).records
        return TaskExamples(tokenizer, examples, TASK_FORMATS[data], seq_len), f"task:{data}"
    path = Path(data).expanduser()
    if path.suffix == ".txt":
        return TextChunks(tokenizer, corpus_text(path), seq_len), f"text:{path}"
    if path.suffix == ".json":
        task = path.stem.lower()
        if task not in TASK_FORMATS:
            raise ValueError(f"{path}: the file name must name a known task ({sorted(TASK_FORMATS)})")
        examples = read_classification(path, task=task).records
        return TaskExamples(tokenizer, examples, TASK_FORMATS[task], seq_len), f"task:{path}"
    raise ValueError(
        f"unknown data {data!r}: use one of {sorted(TEXT_CORPORA) + sorted(TASK_FORMATS)}, a .txt or a <task>.json file"
    )


def split_batches(size: int, batch_size: int, eval_batches: int, seed: int) -> tuple[list[list[int]], Iterator[list[int]]]:
    """Fixed held-out batches and an endless iterator of training batches (reshuffled every epoch)."""
    order = list(range(size))
    random.Random(seed).shuffle(order)
    n_eval = min(eval_batches * batch_size, size // 2)
    held_out, train = order[:n_eval], order[n_eval:]
    eval_list = [held_out[i : i + batch_size] for i in range(0, len(held_out), batch_size)]

    def train_iter() -> Iterator[list[int]]:
        rng = random.Random(seed + 1)
        while True:
            epoch = train[:]
            rng.shuffle(epoch)
            for i in range(0, len(epoch) - batch_size + 1, batch_size):
                yield epoch[i : i + batch_size]
            if len(epoch) < batch_size:
                yield epoch

    return eval_list, train_iter()
