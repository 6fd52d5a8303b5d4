"""Datasets by name: where each lives under the data directory, how to read it, where to get it.

The data directory is ``data_dir=`` when given, else the ``SEQEDIT_DATA_DIR`` setting. Record counts quoted
below are those of the files the project's shared data directory holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict

from seqedit.data.builtin import builtin_facts_path
from seqedit.data.downstream import (
    MULTIPLE_CHOICE_TASKS,
    read_classification,
    read_multiple_choice,
)
from seqedit.data.edit_files import read_edit_file
from seqedit.data.errors import DatasetNotFoundError, UnknownDatasetError
from seqedit.data.known_facts import read_known_facts
from seqedit.data.prose import BUILTIN_PROSE, PROSE_CITATION, PROSE_LICENCE, builtin_prose_path
from seqedit.data.records import EditRequest, KnownFact, MultipleChoiceExample, TextClassificationExample
from seqedit.data.report import LoadReport
from seqedit.data.text import TextUnit, read_wikitext
from seqedit.data.zsre import read_zsre
from seqedit.settings import get_settings

DatasetKind = Literal["edits", "known-facts", "text", "downstream"]
DownloadFormat = Literal["file", "pickle"]

# Sources are pinned to a commit, so a download cannot change under us (commits of versions holding each
# file, as listed by a public code index; the files' SHA-256 is not recorded because no copy known to be
# byte-identical to these commits was available to hash; set ``sha256`` once one is). rome.baulab.info
# has no versions: its two files are checked by size cap and layout only.
_KNOWLEDGE_SPREAD_REPO = "https://raw.githubusercontent.com/Jometeorie/KnowledgeSpread"
_KNOWLEDGE_SPREAD_COUNTERFACT = f"{_KNOWLEDGE_SPREAD_REPO}/d1a8d1ed5367e66010d4d9b081ab388b46c2438c/data"
_KNOWLEDGE_SPREAD_ZSRE = f"{_KNOWLEDGE_SPREAD_REPO}/51d7402617c2e52bde0dc11b76e400c3725a181a/data"
_WIKITEXT_COMMITS = {"test": "cada773327ba94a5970e0d57c17c847d69dbbb8f", "valid": "37ce9402ff0cae48d764d7788810fd2ed8238b25"}
_WIKITEXT = "https://raw.githubusercontent.com/pytorch/examples/{commit}/word_language_model/data/wikitext-2"
# github.com/.../raw/ (not raw.githubusercontent.com) also resolves files kept in Git LFS.
_ALPHAEDIT_GLUE = "https://github.com/jianghoucheng/AlphaEdit/raw/d04ed2c2e576fa7d6805d1dcb1d60d6c35be7b8c/glue_eval/dataset"
DEFAULT_MAX_DOWNLOAD_BYTES = 256 * 2**20  # larger than any registered source; a bigger answer is refused

_CITE_COUNTERFACT = (
    "Meng, Bau, Andonian, Belinkov. Locating and Editing Factual Associations in GPT. NeurIPS 2022."
)
_CITE_ALPHAEDIT = (
    "Subsets as used by Fang et al., AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models, "
    "ICLR 2025 (glue_eval/dataset)."
)
_CITE_GLUE = "Wang et al. GLUE: A Multi-Task Benchmark and Analysis Platform for NLU. ICLR 2019."
_NO_LICENCE = "none stated by the source"


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset. ``paths`` are relative to the data directory and tried in order."""

    name: str
    kind: DatasetKind
    paths: tuple[str, ...]
    reader: Callable[..., Any]
    description: str
    url: str | None
    citation: str
    licence: str
    download_path: str | None = None  # where download_dataset saves; defaults to paths[0]
    download_format: DownloadFormat = "file"  # "pickle": a list of plain records, converted to JSON
    bundled: bool = False  # shipped inside the package, needs no data directory
    sha256: str | None = None  # expected SHA-256 of the downloaded bytes (checked when set)
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES  # a download larger than this is refused

    @property
    def download_target(self) -> str:
        return self.download_path or self.paths[0]


def _glue(name: str, records: int, what: str, citation: str, licence: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        kind="downstream",
        paths=(f"downstream/{name}.json",),
        reader=partial(read_classification, task=name),
        description=f"{what}; label-balanced subset ({records} records in the shared copy). "
        f"The source is a pickle ({name}.pkl); download_dataset converts it to JSON.",
        url=f"{_ALPHAEDIT_GLUE}/{name}.pkl",
        citation=f"{citation} {_CITE_ALPHAEDIT}",
        licence=licence,
        download_format="pickle",
    )


def _wikitext(split: str, words: str) -> DatasetSpec:
    return DatasetSpec(
        name=f"wikitext2-{split}",
        kind="text",
        paths=(f"text/wikitext2-{split}.txt",),
        reader=read_wikitext,
        description=f"WikiText-2 {split} split (text name wikitext2:{split}), tokenised text with <unk> (~{words} "
        "words); paragraphs.",
        url=f"{_WIKITEXT.format(commit=_WIKITEXT_COMMITS[split])}/{split}.txt",
        citation="Merity, Xiong, Bradbury, Socher. Pointer Sentinel Mixture Models. ICLR 2017.",
        licence="CC BY-SA 3.0",
    )


_SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="counterfact",
        kind="edits",
        paths=("counterfact/counterfact-edit.json", "counterfact/counterfact.json"),
        reader=read_edit_file,
        description="CounterFact counterfactual edits. The shared copy is the 10,000-record EasyEdit layout "
        f"({_KNOWLEDGE_SPREAD_COUNTERFACT}/counterfact/counterfact-edit.json); the download is ROME's full file "
        "(21,919 records, ROME layout, saved as counterfact/counterfact.json). Both layouts are read.",
        url="https://rome.baulab.info/data/dsets/counterfact.json",
        citation=_CITE_COUNTERFACT,
        licence=_NO_LICENCE,
        download_path="counterfact/counterfact.json",
    ),
    DatasetSpec(
        name="counterfact-train",
        kind="edits",
        paths=("counterfact/counterfact-train.json",),
        reader=read_edit_file,
        description="CounterFact training split in the EasyEdit layout (10,000 records), meant for training "
        "hypernetworks such as MEND; almost disjoint from the edit split.",
        url=f"{_KNOWLEDGE_SPREAD_COUNTERFACT}/counterfact/counterfact-train.json",
        citation=_CITE_COUNTERFACT,
        licence=_NO_LICENCE,
    ),
    DatasetSpec(
        name="zsre",
        kind="edits",
        paths=("zsre/zsre-1k.json",),
        reader=read_zsre,
        description="zsRE question-answering edits, MEND layout, 1,000 records (new target: 'alt'). ROME/MEMIT "
        "publish a larger file with the same fields (https://rome.baulab.info/data/dsets/zsre_mend_eval.json) "
        "but edit towards answers[0]: read it with read_zsre(path, new_target='answer').",
        url=f"{_KNOWLEDGE_SPREAD_ZSRE}/zsre/zsre_mend_train-1k.json",
        citation="Levy, Seo, Choi, Zettlemoyer. Zero-Shot Relation Extraction via Reading Comprehension. "
        "CoNLL 2017. Split: Mitchell et al. Fast Model Editing at Scale (MEND). ICLR 2022.",
        licence=_NO_LICENCE,
    ),
    DatasetSpec(
        name="known-facts",
        kind="known-facts",
        paths=("known_facts/known_1000.json",),
        reader=read_known_facts,
        description="Facts GPT-2-XL knows (ROME's known_1000, 1,209 records): a probe set, not edits.",
        url="https://rome.baulab.info/data/dsets/known_1000.json",
        citation=_CITE_COUNTERFACT,
        licence=_NO_LICENCE,
    ),
    _wikitext("valid", "214k"),
    _wikitext("test", "241k"),
    _glue(
        "sst2",
        856,
        "GLUE SST-2 sentiment (0 negative, 1 positive)",
        f"Socher et al. 2013. {_CITE_GLUE}",
        "see GLUE (SST: none stated)",
    ),
    _glue(
        "mrpc",
        258,
        "GLUE MRPC paraphrase (0 not_equivalent, 1 equivalent)",
        f"Dolan, Brockett 2005. {_CITE_GLUE}",
        "see GLUE (MRPC: Microsoft Research licence)",
    ),
    _glue(
        "cola",
        644,
        "GLUE CoLA acceptability (0 unacceptable, 1 acceptable)",
        f"Warstadt, Singh, Bowman 2019. {_CITE_GLUE}",
        "see GLUE (CoLA: none stated)",
    ),
    _glue(
        "rte",
        262,
        "GLUE RTE entailment (0 entailment, 1 not_entailment)",
        f"Dagan et al. 2006 and later RTE challenges. {_CITE_GLUE}",
        "see GLUE (RTE: none stated)",
    ),
    _glue(
        "nli",
        2489,
        "RTE-style NLI pairs with string labels entailment / not_entailment",
        "Origin not documented by AlphaEdit.",
        _NO_LICENCE,
    ),
    DatasetSpec(
        name="mmlu",
        kind="downstream",
        paths=("downstream/mmlu.json",),
        reader=read_multiple_choice,
        description="MMLU four-way multiple choice, 1,516 questions over 57 subjects. The source is a pickle "
        "(mmlu.pkl); download_dataset converts it to JSON.",
        url=f"{_ALPHAEDIT_GLUE}/mmlu.pkl",
        citation="Hendrycks et al. Measuring Massive Multitask Language Understanding. ICLR 2021. "
        + _CITE_ALPHAEDIT,
        licence="MIT",
        download_format="pickle",
    ),
    DatasetSpec(
        name="builtin",
        kind="edits",
        paths=(),
        reader=partial(read_edit_file, layout="seqedit"),
        description="seqedit's own counterfactual edits about well-known entities (ships with the package).",
        url=None,
        citation="seqedit (this project).",
        licence="Apache-2.0",
        bundled=True,
    ),
    DatasetSpec(
        name=BUILTIN_PROSE,
        kind="text",
        paths=(),
        reader=read_wikitext,
        description="English prose shipped with the package (Jane Austen, ~43.6k words, one paragraph per "
        "line): key statistics when WikiText-2 is absent.",
        url=None,
        citation=PROSE_CITATION,
        licence=PROSE_LICENCE,
        bundled=True,
    ),
)
_BUNDLED_PATHS: Mapping[str, Callable[[], Path]] = {"builtin": builtin_facts_path, BUILTIN_PROSE: builtin_prose_path}

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})


class DatasetInfo(BaseModel):
    """What ``seqedit datasets`` shows for one dataset."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: DatasetKind
    description: str
    path: Path | None  # the file found, else where download_dataset would put it (None: no data dir)
    found: bool
    records: int | None  # raw records (paragraphs for text) when found; None when not found or unreadable
    url: str | None
    citation: str
    licence: str
    error: str | None = None  # why the file could not be counted


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(name, list(DATASETS)) from None


def dataset_names(kind: DatasetKind | None = None) -> list[str]:
    return [spec.name for spec in _SPECS if kind is None or spec.kind == kind]


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return get_settings().data_dir


def dataset_path(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file of a registered dataset, or DatasetNotFoundError saying where we looked and where to get it."""
    spec = get_spec(name)
    if spec.bundled:
        return _BUNDLED_PATHS[spec.name]()
    base = resolve_data_dir(data_dir)
    looked: list[Path] = []
    if base is not None:
        for relative in spec.paths:
            candidate = base / relative
            if candidate.is_file():
                return candidate
            if candidate.parent not in looked:
                looked.append(candidate.parent)
    note = (
        "The source is a pickle: download_dataset converts it to the JSON file read here."
        if spec.download_format == "pickle"
        else None
    )
    raise DatasetNotFoundError(" or ".join(spec.paths), looked, url=spec.url, name=spec.name, note=note)


def find_file(path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> Path:
    """A file given by path: absolute, or relative to the working directory or the data directory."""
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [Path.cwd() / given]
    base = resolve_data_dir(data_dir)
    if not given.is_absolute() and base is not None:
        candidates.append(base / given)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if not given.suffix and len(given.parts) == 1:  # looks like a misspelt dataset name
        raise UnknownDatasetError(str(path), list(DATASETS))
    looked = [candidate.parent for candidate in candidates]
    raise DatasetNotFoundError(str(path), looked, url=url_for_file(given.name))


def url_for_file(file_name: str) -> str | None:
    """The download URL of the registered dataset stored under ``file_name``, if any."""
    for spec in _SPECS:
        if any(Path(relative).name == file_name for relative in spec.paths):
            return spec.url
    return None


def _spec_of_kind(name_or_path: str | os.PathLike[str], kind: DatasetKind) -> DatasetSpec | None:
    """The registered spec when ``name_or_path`` is a name; ValueError when it names another kind."""
    if not isinstance(name_or_path, str) or name_or_path not in DATASETS:
        return None
    spec = DATASETS[name_or_path]
    if spec.kind != kind:
        raise ValueError(f"dataset {spec.name!r} holds {spec.kind}, not {kind}")
    return spec


def load_edit_requests(
    name_or_path: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
    skip_invalid: bool = False,
) -> LoadReport[EditRequest]:
    """Edit requests from a registered dataset (``counterfact``, ``zsre``, ``builtin``...) or an edit file.

    ``offset``/``limit`` select raw records by position; with ``skip_invalid`` the invalid ones among them are
    left out and listed in the report's ``skipped``.
    """
    spec = _spec_of_kind(name_or_path, "edits")
    if spec is None:
        path = find_file(name_or_path, data_dir)
        return read_edit_file(path, limit=limit, offset=offset, skip_invalid=skip_invalid)
    report: LoadReport[EditRequest] = spec.reader(
        dataset_path(spec.name, data_dir),
        limit=limit,
        offset=offset,
        skip_invalid=skip_invalid,
        source=spec.name,
    )
    return report


def load_known_facts(
    name_or_path: str | os.PathLike[str] = "known-facts",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
    skip_invalid: bool = False,
) -> LoadReport[KnownFact]:
    spec = _spec_of_kind(name_or_path, "known-facts")
    path = dataset_path(spec.name, data_dir) if spec else find_file(name_or_path, data_dir)
    return read_known_facts(path, limit=limit, offset=offset, skip_invalid=skip_invalid)


@overload
def load_downstream(
    name: Literal["mmlu"],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
    skip_invalid: bool = False,
) -> LoadReport[MultipleChoiceExample]: ...


@overload
def load_downstream(
    name: Literal["sst2", "mrpc", "cola", "rte", "nli"],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
    skip_invalid: bool = False,
) -> LoadReport[TextClassificationExample]: ...


@overload
def load_downstream(
    name: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
    skip_invalid: bool = False,
) -> LoadReport[TextClassificationExample] | LoadReport[MultipleChoiceExample]: ...


def load_downstream(
    name: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
    skip_invalid: bool = False,
) -> LoadReport[TextClassificationExample] | LoadReport[MultipleChoiceExample]:
    """A downstream task by name (sst2, mrpc, cola, rte, nli, mmlu) or a file named after its task."""
    spec = _spec_of_kind(name, "downstream")
    path = dataset_path(spec.name, data_dir) if spec else find_file(name, data_dir)
    task = spec.name if spec else path.stem
    if task in MULTIPLE_CHOICE_TASKS:
        return read_multiple_choice(path, task=task, limit=limit, offset=offset, skip_invalid=skip_invalid)
    return read_classification(path, task=task, limit=limit, offset=offset, skip_invalid=skip_invalid)


def load_text(
    name_or_path: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    unit: TextUnit = "paragraph",
    limit: int | None = None,
    offset: int = 0,
    max_chars: int | None = None,
    unk: str | None = None,
) -> list[str]:
    """Paragraphs (or articles) of a text corpus (``wikitext2-valid``, ``wikitext2-test``) or a WikiText file."""
    spec = _spec_of_kind(name_or_path, "text")
    path = dataset_path(spec.name, data_dir) if spec else find_file(name_or_path, data_dir)
    return read_wikitext(path, unit=unit, limit=limit, offset=offset, max_chars=max_chars, unk=unk)


def describe_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[DatasetInfo]:
    """Every registered dataset with whether it is present and how many records it has."""
    return [_describe(spec, data_dir) for spec in _SPECS]


def _describe(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None) -> DatasetInfo:
    path, records, error = _locate_and_count(spec, data_dir)
    return DatasetInfo(
        name=spec.name,
        kind=spec.kind,
        description=spec.description,
        path=path,
        found=records is not None or error is not None,
        records=records,
        url=spec.url,
        citation=spec.citation,
        licence=spec.licence,
        error=error,
    )


def _locate_and_count(
    spec: DatasetSpec, data_dir: str | os.PathLike[str] | None
) -> tuple[Path | None, int | None, str | None]:
    """(file found or expected download place, record count, read error); count and error None: not found."""
    try:
        path = dataset_path(spec.name, data_dir)
    except DatasetNotFoundError:
        base = resolve_data_dir(data_dir)
        return (base / spec.download_target if base is not None else None), None, None
    return (path, *_count_records(spec, path))


def _count_records(spec: DatasetSpec, path: Path) -> tuple[int | None, str | None]:
    """Raw record count (no validation, so it stays fast); an unreadable file gives its error instead."""
    try:
        if spec.kind == "text":
            return len(read_wikitext(path)), None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(data, list):
        return None, f"expected a JSON list, got a JSON {type(data).__name__}"
    return len(data), None
