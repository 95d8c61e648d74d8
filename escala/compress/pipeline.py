"""``escala compress``: run a :class:`~escala.compress.recipe.Recipe` on a trained checkpoint.

Steps, in order (each optional): distillation into the checkpoint's model (the student) from teacher
checkpoints; structured thinning + retraining; magnitude pruning in rounds, each retrained with masks
fixed; k-means weight sharing + centroid fine-tuning; the compressed file (sparse, shared, Huffman)
written, read back and checked bit for bit; int8 with torch.ao. Every retraining goes through the one
training loop with the checkpoint's configuration (:mod:`escala.compress.retrain`). ``OUT`` receives
``model.escz``, ``model_int8.pt`` when asked, ``stages/STEP/`` (the runs) and ``summary.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from escala.checkpoint import load_checkpoint
from escala.compress import quantize as q
from escala.compress.distill import TemperatureScaled, transfer_set
from escala.compress.fileformat import encode_model, load_compressed, write_compressed
from escala.compress.prune import apply_masks, magnitude_masks, make_permanent, round_sparsity, sparsity
from escala.compress.recipe import Recipe, build_recipe, check_against_model
from escala.compress.report import layer_rows, markdown
from escala.compress.retrain import refresh, retrain, stage_config
from escala.compress.share import apply_sharing, codebooks, remove_sharing
from escala.compress.speed import latency, sparse_copy
from escala.compress.structured import layer_shapes, reshape_layers, thin
from escala.compress.targets import select_layers, weight_layers
from escala.data import DataSplit, load_dataset
from escala.errors import UserError
from escala.metrics import write_json
from escala.train.trainer import fetch


def build_args(config: dict[str, Any], data: DataSplit) -> dict[str, Any]:
    return {
        "model": config["model"],
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "hidden": list(config.get("hidden", (128, 64))),
        "dropout": float(config.get("dropout", 0.0)),
    }


def load_trained(path: str | Path, data: DataSplit | None = None) -> tuple[nn.Module, dict, DataSplit]:
    """Model, training config and data of an ``escala train`` checkpoint."""
    from escala.models import build_model

    ckpt = load_checkpoint(path)
    cfg = ckpt.get("config")
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise UserError(
            f"checkpoint {path} holds no training config; compress needs one made by escala train"
        )
    if data is None:
        data = load_dataset(
            cfg["dataset"],
            cfg.get("data_dir") or None,
            seed=cfg.get("seed", 0),
            synthetic_samples=cfg.get("synthetic_samples", 4096),
            synthetic_shape=tuple(cfg.get("synthetic_shape", (1, 8, 8))),
            synthetic_classes=cfg.get("synthetic_classes", 10),
        )
    b = build_args(cfg, data)
    model = build_model(
        b["model"], tuple(b["input_shape"]), b["num_classes"], hidden=tuple(b["hidden"]), dropout=b["dropout"]
    )
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise UserError(
            f"checkpoint {path}: weights do not fit model {b['model']}: {str(err).splitlines()[0]}"
        ) from None
    return model.eval(), cfg, data


@torch.no_grad()
def accuracy(model: nn.Module, split, batch: int = 1024) -> float:
    """Top-1 accuracy on ``split`` (a dataset of (input, label)), on the CPU, eval mode."""
    model.eval()
    n = len(split)
    correct = 0
    for start in range(0, n, batch):
        x, y = fetch(split, torch.arange(start, min(start + batch, n)))
        correct += int((model(x).argmax(dim=1) == y).sum())
    return correct / max(n, 1)


def dense_bytes(model: nn.Module) -> int:
    """Bytes of the model's state as plain dense tensors (float32 weights: 4 bytes each)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def dense_copy(model: nn.Module, build: dict[str, Any]) -> nn.Module:
    """A plain copy of ``model``: masks and shared weights evaluated into ordinary ``weight`` tensors.

    Built fresh rather than deep-copied, from the weights the layers compute with (masks and shared
    values recomputed first).
    """
    from escala.models import build_model

    refresh(model)
    plain = build_model(
        build["model"],
        tuple(build["input_shape"]),
        build["num_classes"],
        hidden=tuple(build["hidden"]),
        dropout=build["dropout"],
    )
    reshape_layers(plain, layer_shapes(model))
    state = {}
    layers = weight_layers(model)
    for key in plain.state_dict():
        owner, _, leaf = key.rpartition(".")
        if owner in layers and leaf == "weight":
            w = layers[owner].weight.detach().clone()
            w[w == 0] = 0.0  # one zero (not -0.0), as make_permanent stores it
            state[key] = w
        else:
            state[key] = model.state_dict()[key]
    plain.load_state_dict(state)
    return plain.eval()


def compress(
    checkpoint: str | Path,
    out: str | Path,
    recipe: Recipe | dict[str, Any],
    dataset: DataSplit | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Compress the model of ``checkpoint`` as ``recipe`` says; results in ``out``; returns the summary."""
    r = recipe if isinstance(recipe, Recipe) else build_recipe(None, recipe)
    model, cfg, data = load_trained(checkpoint, dataset)
    check_against_model(r, model)
    teachers = [load_trained(t, data)[0] for t in r.distill_from]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"out {out} exists and is not a directory")
    if (out / "summary.json").exists() and not r.overwrite:
        raise UserError(
            f"out {out} already holds a compression result; pass --overwrite or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    build = build_args(cfg, data)
    original = copy.deepcopy(model)
    base_lr = float(cfg.get("lr", 0.1))
    stages: list[dict[str, Any]] = []

    def record(name: str, m: nn.Module, bits: dict[str, int] | None = None, huffman: bool = False) -> None:
        m = m.student if isinstance(m, TemperatureScaled) else m
        flat, books = dense_copy(m, build), codebooks(m)
        _, payload = encode_model(flat, books=books, bits=bits, **index, huffman=huffman)
        entry = {"stage": name, "val_acc": accuracy(flat, data.val), "payload_bytes": len(payload)}
        stages.append(entry)
        log(f"{name:<28} val_acc {entry['val_acc']:.4f}  payload {entry['payload_bytes']:,} bytes")

    def train_stage(name: str, m: nn.Module, split: DataSplit, epochs: int, lr: float) -> None:
        if epochs > 0:
            config = stage_config(
                cfg, out / "stages" / name, epochs=epochs, lr=lr, workers=r.workers, progress=r.progress
            )
            retrain(m, split, config)

    soft: list[DataSplit] = []

    def recover(name: str, m: nn.Module, epochs: int, lr: float) -> None:
        """Retrain after pruning/sharing: on the labels, or on the original model's soft targets."""
        if not r.retrain_distill:
            return train_stage(name, m, data, epochs, lr)
        if not soft:  # the dense model before compression is the teacher (Hinton et al. 2015)
            soft.append(transfer_set(teachers or [original], data, r.temperature, r.alpha, seed=r.seed))
        train_stage(name, TemperatureScaled(m, r.temperature), soft[0], epochs, lr)

    index = {"index_bits": r.index_bits, "index_bits_per_layer": r.index_bits_per_layer}
    record("original", model)
    summary: dict[str, Any] = {"checkpoint": str(checkpoint), "steps": r.steps(), "model": build["model"]}
    retrain_lr = r.retrain_lr or base_lr / 10

    if r.distill_from:
        if r.distill_reinit:
            torch.manual_seed(r.seed)
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        split = transfer_set(
            teachers,
            data,
            r.temperature,
            r.alpha,
            r.distill_fraction,
            r.munge_samples,
            r.munge_p,
            r.munge_s,
            r.seed,
        )
        wrapper = TemperatureScaled(model, r.temperature)
        train_stage("distill", wrapper, split, r.distill_epochs, r.distill_lr or base_lr)
        summary["distill"] = {
            "teachers": list(r.distill_from),
            "teacher_val_acc": [accuracy(t, data.val) for t in teachers],
            "transfer_samples": len(split.train),
            "student_val_acc": accuracy(model, data.val),
        }
        record("distill", model)

    if r.structured > 0:
        widths = thin(model, r.structured)
        summary["structured"] = {"widths": widths}
        record("structured (thinned)", model)
        recover("structured", model, r.retrain_epochs, retrain_lr)
        record("structured + retrain", model)

    if "prune" in r.steps():
        layers = select_layers(model, r.prune_layers, "prune_layers")
        for k in range(1, r.prune_rounds + 1):
            targets = {
                n: round_sparsity(r.prune_per_layer.get(n, r.prune), k, r.prune_rounds) for n in layers
            }
            quality = {n: r.prune_quality * k / r.prune_rounds for n in layers} if r.prune_quality else None
            apply_masks(
                model, magnitude_masks(layers, sparsity=None if quality else targets, quality=quality)
            )
            record(f"prune round {k}", model)
            recover(f"prune{k}", model, r.retrain_epochs, retrain_lr)
            record(f"prune round {k} + retrain", model)
        make_permanent(model)
        summary["sparsity"] = sparsity(model)

    bits: dict[str, int] = {}
    if "share" in r.steps():
        names = select_layers(model, r.prune_layers, "prune_layers") if r.share_bits else {}
        bits = {n: r.share_bits for n in names}
        bits.update(r.share_bits_per_layer)
        summary["share"] = apply_sharing(model, bits, seed=r.seed)
        record("share (k-means)", model, bits)
        recover("share", model, r.share_epochs, r.share_lr or retrain_lr)
        record("share + centroid fine-tune", model, bits)
    books = remove_sharing(model)
    make_permanent(model)
    model.eval()

    # -- the file: written, read back, checked bit for bit -----------------------------------------
    path = out / "model.escz"
    fixed, _ = encode_model(model, books=books, bits=bits, **index, huffman=False)
    coded, _ = encode_model(model, books=books, bits=bits, **index, huffman=True)
    write_compressed(path, model, build, books=books, bits=bits, **index, huffman=r.huffman)
    reloaded = load_compressed(path)
    mine, theirs = model.state_dict(), reloaded.state_dict()
    identical = mine.keys() == theirs.keys() and all(
        mine[k].dtype == theirs[k].dtype
        and torch.equal(mine[k].view(-1).view(torch.uint8), theirs[k].view(-1).view(torch.uint8))
        if mine[k].numel()
        else True
        for k in mine
    )
    if not identical:
        raise RuntimeError(f"{path} does not reload to the model that was written (a bug in escala)")
    rows = layer_rows(fixed, coded)
    size_before, file_bytes = dense_bytes(original), path.stat().st_size
    acc_before, acc_file = stages[0]["val_acc"], accuracy(reloaded, data.val)
    if r.huffman:
        stages.append(
            {
                "stage": "huffman (file)",
                "val_acc": acc_file,
                "payload_bytes": rows[-1]["bytes_pqh"] if rows else 0,
            }
        )
    summary.update(
        {
            "file": {
                "path": str(path),
                "size_bytes": file_bytes,
                "val_acc": acc_file,
                "reloads_identical": identical,
            },
            "layers": rows,
            "table": markdown(rows),
            "stages": stages,
        }
    )
    size_after, acc_after = file_bytes, acc_file

    # -- int8 ---------------------------------------------------------------------------------------
    int8_model = None
    if r.int8 != "none":
        calib = _calibration(data, int(cfg.get("batch_size", 32)), r.calibration_batches)

        def train_qat(prepared: nn.Module) -> None:
            train_stage("qat", prepared, data, r.qat_epochs, retrain_lr)

        int8_model = q.quantize(model, r.int8, calib, train_qat)
        int8_path = out / "model_int8.pt"
        torch.save({"method": r.int8, "build": build, "state": int8_model.state_dict()}, int8_path)
        size_after, acc_after = int8_path.stat().st_size, accuracy(int8_model, data.val)
        summary["int8"] = {
            "method": r.int8,
            "engine": q.engine(),
            "path": str(int8_path),
            "size_bytes": size_after,
            "val_acc": acc_after,
        }
        stages.append({"stage": f"int8 ({r.int8})", "val_acc": acc_after, "payload_bytes": size_after})

    if r.speed:
        summary["speed"] = measure_speed(original, model, int8_model, data)

    summary.update(
        {
            "size_bytes_before": size_before,
            "size_bytes_after": size_after,
            "compression_ratio": size_before / max(size_after, 1),
            "val_acc_before": acc_before,
            "val_acc_after": acc_after,
            "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(r).items()},
        }
    )
    write_json(out / "summary.json", summary)
    log(summary["table"])
    log(
        f"{size_before:,} -> {size_after:,} bytes ({summary['compression_ratio']:.1f}x), "
        f"val_acc {acc_before:.4f} -> {acc_after:.4f}  -> {out / 'summary.json'}"
    )
    return json.loads((out / "summary.json").read_text())


def _calibration(data: DataSplit, batch: int, batches: int) -> list[torch.Tensor]:
    n = len(data.train)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=g)
    return [
        fetch(data.train, order[i * batch : (i + 1) * batch])[0]
        for i in range(min(batches, max(1, n // batch)))
    ]


def measure_speed(
    original: nn.Module, final: nn.Module, int8_model: nn.Module | None, data: DataSplit
) -> dict:
    """CPU latency (batch 1) and throughput (batch 256) of every deployable form, vs the original."""
    models = {"original fp32": original.eval(), "compressed dense fp32": final.eval()}
    sparse, replaced = sparse_copy(final)
    if replaced:
        models["compressed sparse CSR"] = sparse
    if int8_model is not None:
        models["int8"] = int8_model
    x_all = fetch(data.val, torch.arange(min(len(data.val), 256)))[0]
    result: dict[str, Any] = {"sparse_layers": replaced, "threads": torch.get_num_threads()}
    for batch in (1, 256):
        x = (
            x_all[:batch]
            if len(x_all) >= batch
            else x_all.repeat((batch + len(x_all) - 1) // len(x_all), *[1] * (x_all.dim() - 1))[:batch]
        )
        times = latency(models, x, budget_s=1.0)
        base = times["original fp32"]
        result[f"batch{batch}"] = {
            k: {"ms": 1000 * t, "samples_per_s": batch / t, "speedup": base / t} for k, t in times.items()
        }
    return result
