"""What a local model computes, as a digest, and a small on-disk store of tensors derived from it.

Results that depend only on a model's weights and a trait (persona vectors, trait-objective gradients) are
worth keeping between audits: every later audit against the same base reuses them. They are keyed by
`weights_identity`, never by a path, so a model retrained in place gets new entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def weights_identity(model) -> str:
    """A digest of what the model computes: architecture config, chat template and a sample of every weight tensor.

    Cheap at any size (64 values per tensor) and blind to paths, so a model retrained in place gets a
    new identity and a copy in another folder has the same one (the config's `_name_or_path` is the
    folder it was loaded from, so it is left out). Not memoised: weights changed in place get a new identity.
    """
    net, tokenizer = model.weights()
    config = json.loads(net.config.to_json_string(use_diff=False))
    config.pop("_name_or_path", None)
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True).encode())
    digest.update(str(getattr(tokenizer, "chat_template", "")).encode())
    for name, param in net.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(param.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def stored_path(kind: str, identity: str, key: dict) -> Path:
    """<cache>/<kind>/<identity[:16]>/<digest of key>.safetensors"""
    from auditor.models.cache import cache_root

    name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return cache_root() / kind / identity[:16] / f"{name}.safetensors"


def load_stored(path: Path) -> dict | None:
    """The tensors stored at `path`, or None when there are none (or they cannot be read: recomputed)."""
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception:  # noqa: BLE001 - a torn or foreign file is a cache miss, not an error
        return None


def store(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write torch tensors (or numpy arrays) as safetensors, atomically (a temporary file renamed into place): a reader
    sees the whole file or none."""
    import torch
    from safetensors.torch import save_file

    tensors = {k: torch.from_numpy(v) if not torch.is_tensor(v) else v for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
