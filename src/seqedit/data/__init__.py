"""Datasets: edit requests, known facts, text corpora and downstream tasks.

Load by registered name (``load_edit_requests("counterfact")``) or by file path; every loader returns a
:class:`LoadReport` (a read-only list of records plus what was skipped and why) except :func:`load_text`.
"""

from seqedit.data.builtin import read_builtin
from seqedit.data.corpora import (
    Corpus,
    TextOverlapError,
    TextSplit,
    parse_split,
    read_split,
    statistics_corpus,
)
from seqedit.data.counterfact import read_counterfact
from seqedit.data.download import download_dataset
from seqedit.data.downstream import read_classification, read_multiple_choice
from seqedit.data.edit_files import read_edit_file
from seqedit.data.errors import DatasetError, DatasetNotFoundError, DownloadError, UnknownDatasetError
from seqedit.data.known_facts import read_known_facts
from seqedit.data.records import (
    EditRequest,
    KnownFact,
    MultipleChoiceExample,
    NeighborhoodPrompt,
    TextClassificationExample,
)
from seqedit.data.registry import (
    DATASETS,
    DatasetInfo,
    DatasetSpec,
    dataset_path,
    describe_datasets,
    load_downstream,
    load_edit_requests,
    load_known_facts,
    load_text,
)
from seqedit.data.report import LoadReport, SkippedRecord
from seqedit.data.text import read_wikitext
from seqedit.data.zsre import read_zsre

__all__ = [
    "DATASETS",
    "Corpus",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DownloadError",
    "EditRequest",
    "KnownFact",
    "LoadReport",
    "MultipleChoiceExample",
    "NeighborhoodPrompt",
    "SkippedRecord",
    "TextClassificationExample",
    "TextOverlapError",
    "TextSplit",
    "UnknownDatasetError",
    "dataset_path",
    "describe_datasets",
    "download_dataset",
    "load_downstream",
    "load_edit_requests",
    "load_known_facts",
    "load_text",
    "parse_split",
    "read_builtin",
    "read_classification",
    "read_counterfact",
    "read_edit_file",
    "read_known_facts",
    "read_multiple_choice",
    "read_split",
    "read_wikitext",
    "read_zsre",
    "statistics_corpus",
]
