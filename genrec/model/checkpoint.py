"""The decoder trainer's checkpoint: everything an interrupted run needs to resume to exactly the weights an
uninterrupted run reaches, in safetensors + JSON (never pickle), written atomically into one folder:
``model.safetensors`` (and ``ema.safetensors`` + ``ema.json`` with a moving average), the optimizer
(``optimizer.safetensors`` + ``optimizer.json``), ``scheduler.json``, ``scaler.json`` (fp16 loss scale),
``trainer_state.json`` (where training stands and the settings it ran with) and ``rng_{process}.safetensors``
(each process's torch generator)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from semid.common import jsonable, replace_dir, temp_sibling

STATE_FILE = "trainer_state.json"


def has_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds a finished checkpoint."""
    return (path / STATE_FILE).is_file()


def read_record(path: Path) -> dict:
    """The checkpoint's ``{"state": ..., "config": ...}`` record."""
    return json.loads((path / STATE_FILE).read_text())


def write_checkpoint(path: Path, acc, model, ema, optimizer, scheduler, record: dict) -> Path:
    """Write the checkpoint of every process into ``path`` atomically (``acc``: the accelerate Accelerator;
    ``ema``: an AveragedModel or None; ``record``: the trainer's state and config as JSON)."""
    tmp = temp_sibling(path, shared=True)  # every process writes its RNG state into it
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(model, str(tmp / "model.safetensors"))
        if ema is not None:
            save_model(ema.module, str(tmp / "ema.safetensors"))
            (tmp / "ema.json").write_text(json.dumps({"n_averaged": int(ema.n_averaged)}))
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(meta))
        (tmp / "scheduler.json").write_text(json.dumps(jsonable(scheduler.state_dict())))
        if acc.scaler is not None:  # fp16 loss scale
            (tmp / "scaler.json").write_text(json.dumps(jsonable(acc.scaler.state_dict())))
        (tmp / STATE_FILE).write_text(json.dumps(record, indent=1))
    acc.wait_for_everyone()
    save_file(_rng_state(), str(tmp / f"rng_{acc.process_index}.safetensors"))
    acc.wait_for_everyone()
    if acc.is_main_process:
        replace_dir(tmp, path)
    acc.wait_for_everyone()
    return path


def read_checkpoint(path: Path, acc, model, ema, optimizer, scheduler) -> None:
    """Load the weights, optimizer, scheduler, loss scale and this process's RNG state saved in ``path``."""
    load_model(model, str(path / "model.safetensors"))
    if ema is not None:
        load_model(ema.module, str(path / "ema.safetensors"))
        ema.n_averaged.fill_(json.loads((path / "ema.json").read_text())["n_averaged"])
    meta = json.loads((path / "optimizer.json").read_text())
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), meta))
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
    if acc.scaler is not None and (path / "scaler.json").is_file():
        acc.scaler.load_state_dict(json.loads((path / "scaler.json").read_text()))
    rng_file = path / f"rng_{acc.process_index}.safetensors"
    if rng_file.is_file():
        _set_rng_state(load_file(str(rng_file)))


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state dict -> (tensors for safetensors, JSON for the rest)."""
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> dict[str, torch.Tensor]:
    """Torch CPU (and CUDA) generator states as uint8 tensors; numpy and Python RNGs are not used."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def _set_rng_state(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    cuda = [states[k] for k in sorted(k for k in states if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
