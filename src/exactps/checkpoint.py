"""Training checkpoints: safetensors weights plus a JSON record, written atomically.

A checkpoint of step ``k`` is two files in one directory:

* ``step-<k>.safetensors``: every tensor, namespaced ``model/<key>``, ``ema/<key>`` and
  ``optim/<param index>/<state name>`` (the optimizer's per-parameter tensors, e.g. AdamW's
  ``exp_avg``, ``exp_avg_sq`` and ``step``);
* ``step-<k>.json``: the record: format, step, the model and training configurations, the
  optimizer's non-tensor state (``param_groups``), the random-number generator states (torch
  CPU, every CUDA device, Python ``random``, NumPy), the data position, and the SHA-256 and size
  of the tensor file.

Each file is written to a temporary file in the same directory and moved into place with
``os.replace`` (atomic on POSIX), tensors first: the JSON is the commit marker, so an
interrupted save leaves either the previous checkpoint or the new one, never a half-written
file under a checkpoint's name. Loading checks the JSON, the presence, size and hash of the
tensor file, and raises :class:`CheckpointError` (or :class:`FileNotFoundError`) naming the
file on any problem.

An *exported model* (:func:`save_model_file`, written by ``exactps export``) is the same pair
without the training state: ``<name>.safetensors`` holds one flat state dict (usually the EMA
weights in float16) and ``<name>.json`` (format ``exactps-model/1``) the objective, the model
configuration, what it was trained on and the SHA-256 and size of the tensor file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from exactps.files import atomic_write, atomic_write_text

__all__ = [
    "FORMAT",
    "MODEL_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "capture_rng_state",
    "checkpoint_paths",
    "checkpoint_step",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_file",
    "load_state_dict_file",
    "model_file_paths",
    "record_format",
    "restore_rng_state",
    "save_checkpoint",
    "save_model_file",
    "verify_checkpoint",
]

FORMAT = "exactps-checkpoint/1"
MODEL_FORMAT = "exactps-model/1"
_NAME = re.compile(r"^step-(\d+)\.(json|safetensors)$")


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (corrupt, truncated, inconsistent)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: state dicts on the CPU and the JSON record ``meta``."""

    path: Path  # the JSON record
    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# -- RNG states ---------------------------------------------------------------------------------------


def _b64(t: Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def capture_rng_state() -> dict[str, Any]:
    """The global generators' states as JSON-serialisable values (torch CPU/CUDA, ``random``, NumPy)."""
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global generator is what we save)
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch_cpu": _b64(torch.get_rng_state()),
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` recorded (CUDA states only if the device count matches)."""
    if "torch_cpu" in state:
        torch.set_rng_state(_unb64(state["torch_cpu"]))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        keys_arr = np.asarray(keys, dtype=np.uint32)
        np.random.set_state((name, keys_arr, pos, has_gauss, cached))  # noqa: NPY002
    cuda = state.get("torch_cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([_unb64(s) for s in cuda])


# -- optimizer state (de)serialisation ----------------------------------------------------------------


def _flatten_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split a ``torch.optim`` state dict into tensors (for safetensors) and JSON values."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": _jsonable(state_dict["param_groups"]), "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, Tensor], record: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split("/", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in record.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = [dict(g) for g in record["param_groups"]]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, non-finite floats kept as strings JSON can hold."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Tensor):
        return value.tolist()
    return value


def _cpu_tensors(prefix: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{prefix + key: tensor}`` as contiguous CPU tensors that share no memory (safetensors needs that)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        t = value.detach()
        t = t.cpu() if t.device.type != "cpu" else t.clone()
        out[prefix + key] = t.contiguous()
    return out


# -- save / load ----------------------------------------------------------------------------------------


def checkpoint_paths(directory: str | Path, step: int) -> tuple[Path, Path]:
    """``(json, safetensors)`` paths of the checkpoint of ``step`` in ``directory``."""
    d = Path(directory)
    return d / f"step-{step:09d}.json", d / f"step-{step:09d}.safetensors"


def save_checkpoint(
    directory: str | Path,
    step: int,
    model: Mapping[str, Tensor],
    ema: Mapping[str, Tensor] | None = None,
    optimizer: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the checkpoint of ``step`` atomically into ``directory``; returns the JSON path.

    ``model``/``ema`` are state dicts, ``optimizer`` a ``torch.optim`` state dict, ``meta`` any
    JSON-serialisable record (configurations, RNG states, data position). An existing checkpoint
    of the same step is an error unless ``overwrite``.
    """
    json_path, tensor_path = checkpoint_paths(directory, step)
    if not overwrite and (json_path.exists() or tensor_path.exists()):
        raise FileExistsError(f"checkpoint {json_path} already exists (refusing to overwrite it)")
    tensors = _cpu_tensors("model/", model)
    if ema is not None:
        tensors.update(_cpu_tensors("ema/", ema))
    optim_record = None
    if optimizer is not None:
        optim_tensors, optim_record = _flatten_optimizer(optimizer)
        tensors.update(_cpu_tensors("", optim_tensors))
    record = {
        "format": FORMAT,
        "step": int(step),
        "has_ema": ema is not None,
        "optimizer": optim_record,
        **_jsonable(dict(meta or {})),
    }
    return _write_tensors_and_record(json_path, tensor_path, tensors, record)


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(step, json path)`` of the checkpoints in ``directory``, by increasing step."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        step = checkpoint_step(p)
        if step is not None and p.suffix == ".json":
            found.append((step, p))
    return sorted(found)


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a checkpoint file ``step-<k>.json`` or ``step-<k>.safetensors`` (``k`` with or without
    zero padding), None for any other name."""
    match = _NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def find_checkpoint(path: str | Path) -> Path:
    """The JSON record of a checkpoint given as its ``.json``, its ``.safetensors``, a directory of
    checkpoints or a run directory (``<run>/checkpoints``): the latest one in a directory."""
    p = Path(path)
    if p.suffix == ".safetensors":
        p = p.with_suffix(".json")
    if p.is_dir():
        directory = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        found = list_checkpoints(directory)
        if not found:
            raise FileNotFoundError(f"no checkpoint (step-*.json) found in {directory}")
        return found[-1][1]
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    return p


def _read_record(
    json_path: Path, fmt: str = FORMAT, what: str = "checkpoint record", kind: str = "an exactps checkpoint record"
) -> dict[str, Any]:
    """The JSON record ``json_path``, which must carry the format tag ``fmt``; ``CheckpointError`` otherwise."""
    try:
        record = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{what} {json_path} is corrupt or unreadable: {err}") from err
    if not isinstance(record, dict) or record.get("format") != fmt:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise CheckpointError(f"{json_path} is not {kind} (format {got!r}, expected {fmt!r})")
    return record


def _write_tensors_and_record(
    json_path: Path, tensor_path: Path, tensors: dict[str, Tensor], record: Mapping[str, Any]
) -> Path:
    """Write ``tensors`` atomically, then ``record`` (its ``format`` tag, plus the tensor file's name,
    SHA-256 and size) as the JSON commit marker; returns ``json_path``."""
    fmt = record["format"]
    atomic_write(tensor_path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": fmt}))
    full = {**record, "tensors": tensor_path.name, "sha256": _sha256(tensor_path), "bytes": tensor_path.stat().st_size}
    atomic_write_text(json_path, json.dumps(full, indent=1))
    return json_path


def _check_tensor_file(tensor_path: Path, record: Mapping[str, Any], verify: bool, what: str) -> None:
    """The tensor file is present, of the recorded size and (if ``verify``) of the recorded SHA-256."""
    if not tensor_path.exists():
        raise FileNotFoundError(f"{what} {tensor_path} are missing")
    size = tensor_path.stat().st_size
    if size != record.get("bytes", size):
        raise CheckpointError(
            f"{what} {tensor_path} are truncated or corrupt: {size} bytes, expected {record['bytes']}"
        )
    if verify and "sha256" in record and _sha256(tensor_path) != record["sha256"]:
        raise CheckpointError(
            f"{what} {tensor_path} are corrupt "
            f"(SHA-256 does not match {tensor_path.with_suffix('.json').name})"
        )


def _read_tensors(
    tensor_path: Path, record: Mapping[str, Any], verify: bool, what: str = "checkpoint tensors"
) -> dict[str, Tensor]:
    _check_tensor_file(tensor_path, record, verify, what)
    try:
        return load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{what} {tensor_path} are corrupt: {err}") from err


def verify_checkpoint(json_path: str | Path) -> dict[str, Any]:
    """Check that the checkpoint record ``json_path`` is readable and its tensor file is present with
    the recorded size and SHA-256 (without decoding the tensors); returns the record. Raises
    :class:`CheckpointError` or :class:`FileNotFoundError` naming the bad file."""
    json_path = Path(json_path)
    record = _read_record(json_path)
    _check_tensor_file(_tensor_path(json_path, record), record, True, "checkpoint tensors")
    return record


def _tensor_path(json_path: Path, record: Mapping[str, Any]) -> Path:
    """The tensor file a checkpoint record names (``step-<k>.safetensors`` by default)."""
    return json_path.with_name(record.get("tensors", json_path.with_suffix(".safetensors").name))


def _split(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_checkpoint(path: str | Path, verify: bool = True) -> Checkpoint:
    """Load a checkpoint (see :func:`find_checkpoint` for what ``path`` may be), tensors on the CPU.

    Raises :class:`FileNotFoundError` if a file is missing and :class:`CheckpointError` if one is
    corrupt, each naming the file. ``verify=False`` skips the SHA-256 check (size is still checked).
    """
    json_path = find_checkpoint(path)
    record = _read_record(json_path)
    tensor_path = _tensor_path(json_path, record)
    tensors = _read_tensors(tensor_path, record, verify)
    model = _split(tensors, "model/")
    if not model:
        raise CheckpointError(f"checkpoint tensors {tensor_path} hold no model weights")
    ema = _split(tensors, "ema/") if record.get("has_ema") else None
    optimizer = None
    if record.get("optimizer") is not None:
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim/")}
        optimizer = _unflatten_optimizer(optim_tensors, record["optimizer"])
    return Checkpoint(json_path, int(record["step"]), model, ema, optimizer, record)


def load_state_dict_file(path: str | Path, prefer_ema: bool = True) -> dict[str, Tensor]:
    """Weights from a checkpoint (EMA if present and ``prefer_ema``), an exported model (its ``.json`` or
    ``.safetensors``), a flat ``.safetensors`` state dict, or a ``.pt``/``.pth`` file holding a state dict
    (``weights_only`` loading)."""
    p = Path(path)
    if not p.exists() and Path(f"{p}.json").exists():  # an exported model named without its suffix
        p = Path(f"{p}.json")
    if p.is_dir() or p.suffix == ".json" or (p.suffix == ".safetensors" and p.with_suffix(".json").exists()):
        if not p.is_dir() and record_format(p.with_suffix(".json")) == MODEL_FORMAT:
            return load_model_file(p)[1]
        ckpt = load_checkpoint(p)
        return ckpt.ema if (prefer_ema and ckpt.ema) else ckpt.model
    if not p.exists():
        raise FileNotFoundError(f"weights file {p} does not exist")
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"weights file {p} is corrupt: {err}") from err
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types on bad pickles
        raise CheckpointError(f"weights file {p} could not be read: {err}") from err
    for key in ("ema", "model_ema", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"weights file {p} does not hold a state dict of tensors")
    return obj


# -- exported models ------------------------------------------------------------------------------------


def model_file_paths(path: str | Path) -> tuple[Path, Path]:
    """``(json, safetensors)`` of the exported model ``path`` (given with either suffix or without one)."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".safetensors")


def record_format(json_path: str | Path) -> str | None:
    """The ``format`` tag of a JSON record, or ``None`` if the file is missing, unreadable or untagged."""
    try:
        record = json.loads(Path(json_path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record.get("format") if isinstance(record, dict) else None


def save_model_file(
    path: str | Path, state: Mapping[str, Tensor], meta: Mapping[str, Any] | None = None, overwrite: bool = False
) -> Path:
    """Write the exported model ``path``: ``<path>.safetensors`` (``state``, a flat state dict) and
    ``<path>.json`` (``meta`` plus format, file name, SHA-256 and size), atomically, tensors first.

    Existing files are an error unless ``overwrite``. Returns the JSON path.
    """
    json_path, tensor_path = model_file_paths(path)
    if not overwrite:
        for p in (json_path, tensor_path):
            if p.exists():
                raise FileExistsError(f"{p} already exists (refusing to overwrite it)")
    tensors = _cpu_tensors("", state)
    record = {"format": MODEL_FORMAT, **{k: v for k, v in _jsonable(dict(meta or {})).items() if k != "format"}}
    return _write_tensors_and_record(json_path, tensor_path, tensors, record)


def load_model_file(path: str | Path, verify: bool = True) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(record, state dict)`` of an exported model (``path`` with either suffix or without one).

    Raises :class:`FileNotFoundError` if a file is missing and :class:`CheckpointError` if one is
    corrupt, truncated or not an exported model, each naming the file.
    """
    json_path, _ = model_file_paths(path)
    if not json_path.exists():
        raise FileNotFoundError(f"model record {json_path} does not exist")
    record = _read_record(json_path, MODEL_FORMAT, "model record", "an exported exactps model")
    tensor_path = json_path.with_name(str(record.get("tensors", json_path.with_suffix(".safetensors").name)))
    state = _read_tensors(tensor_path, record, verify, "model weights")
    if not state:
        raise CheckpointError(f"model weights {tensor_path} hold no tensors")
    return record, state
