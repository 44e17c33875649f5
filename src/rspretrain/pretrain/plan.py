"""``rspretrain plan``: a run's recipe resolved for its data and devices, without training.

:func:`plan_run` resolves a :class:`~rspretrain.pretrain.config.RunConfig` the way ``rspretrain pretrain`` would
(:func:`~rspretrain.pretrain.run.resolve_run_recipe`: epochs to steps, the lr to the global batch) for the data's size
(counted from the data, or given, e.g. a paper's 1.28M when the data is not on this machine) and the devices asked
for, and reports: dataset size, global batch, steps per epoch, total steps, warm-up, the lr after scaling, the teacher
momentum and temperature schedules, SyncBN, precision, the memory per rank (measured, see :func:`estimate_memory`), the
bytes read per epoch, and one line per difference from the method's published recipe
(:mod:`rspretrain.pretrain.paper_recipes`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict
from typing import Any

import torch

from rspretrain.core.config import flatten
from rspretrain.pretrain.config import RunConfig, full_config
from rspretrain.pretrain.methods import get_method
from rspretrain.pretrain.paper_recipes import paper_recipe, recipe_differences

log = logging.getLogger("rspretrain")

#: Optimiser-state tensors per parameter are counted from a real optimiser step (:func:`estimate_memory`).
GB = 1024**3


def plan_run(cfg: RunConfig, config_name: str | None = None, samples_per_epoch: int | None = None,
             memory: bool = True) -> dict[str, Any]:
    """The resolved recipe of ``cfg`` as a JSON-ready dict (see the module docstring).

    Args:
        cfg: the run config (its ``trainer.devices`` / ``num_nodes`` are the devices planned for).
        config_name: the shipped config it came from (its paper recipe is compared), or None.
        samples_per_epoch: items per epoch; None: set up the data and count them.
        memory: measure the memory per rank (builds the method and runs one small step on random data).
    """
    from rspretrain.pretrain.run import knowledge_data, resolve_run_recipe

    dm = None
    if samples_per_epoch is None:
        from rspretrain.pretrain.datamodule import PretrainDataModule

        dm = PretrainDataModule(**knowledge_data(cfg), seed=cfg.seed)
        dm.setup("fit")
    recipe = resolve_run_recipe(cfg, dm, samples_per_epoch)
    resolved_cfg = dataclasses.replace(cfg, optim=recipe.optim, trainer=recipe.trainer)
    flat = flatten(full_config(resolved_cfg))
    out: dict[str, Any] = {
        "method": cfg.method, "config": config_name,
        "samples_per_epoch": recipe.samples_per_epoch, "samples_counted_from": "data" if dm is not None else "given",
        "per_device_batch": recipe.per_device_batch, "devices": recipe.world_size // cfg.trainer.num_nodes,
        "nodes": cfg.trainer.num_nodes, "accumulate_grad_batches": recipe.accumulate,
        "global_batch": recipe.global_batch, "steps_per_epoch": recipe.steps_per_epoch,
        "max_steps": recipe.trainer.max_steps, "epochs": recipe.epochs,
        "optimizer": _optimizer_line(recipe.optim), "lr": recipe.optim.lr, "lr_given": recipe.lr_given,
        "lr_scaling": cfg.optim.lr_scaling, "lr_reference_batch": cfg.optim.lr_reference_batch,
        "lr_schedule": _schedule_line(recipe.optim, recipe.trainer.max_steps),
        "warmup_steps": recipe.optim.warmup_steps,
        "teacher_momentum": _momentum_line(flat, cfg.method, recipe.trainer.max_steps, cfg.data.batch_size),
        "teacher_temperature": _temperature_line(flat, recipe.trainer.max_steps, recipe.steps_per_epoch),
        "sync_batchnorm": recipe.trainer.sync_batchnorm, "precision": recipe.trainer.precision,
        "resolved": {k: {"given": v[0], "resolved": v[1]} for k, v in recipe.resolved.items()},
    }
    if memory:
        model = _build_method(cfg, dm, recipe.optim)
        model.steps_per_epoch, model.schedule_total_steps = recipe.steps_per_epoch, recipe.trainer.max_steps
        size = cfg.data.image_size or model.input_size()
        out["memory_per_rank"] = estimate_memory(model, cfg.data.batch_size, size, recipe.trainer.precision)
    out["read_per_epoch"] = _read_per_epoch(dm, recipe.samples_per_epoch)
    paper = paper_recipe(config_name, cfg.method)
    if paper is not None:
        out["paper"] = {"source": paper.source, "devices": paper.devices, "per_device_batch": paper.per_device_batch,
                        "samples_per_epoch": paper.samples_per_epoch, "data": paper.data}
        out["differences_from_paper"] = recipe_differences(flat, paper, recipe.world_size, recipe.samples_per_epoch)
    return out


def _optimizer_line(optim) -> str:
    kind = {"sgd": "SGD, plain momentum", "nesterov": "SGD, Nesterov momentum"}.get(optim.name.lower(), optim.name)
    momentum = f" {optim.momentum:g}" if optim.name.lower() in ("sgd", "nesterov", "momentum", "lars") else ""
    return f"{kind}{momentum}, weight decay {optim.weight_decay:g}" + (
        " (none on norms and biases)" if optim.no_decay_on_norm_and_bias else "")


def _schedule_line(optim, total: int) -> str:
    start = f" from {optim.warmup_start_ratio:g} x lr" if optim.warmup_start_ratio else ""
    warm = f"linear warm-up {optim.warmup_steps:,} steps{start}, " if optim.warmup_steps else ""
    if optim.schedule == "cosine":
        return f"{warm}cosine to {optim.min_lr_ratio:g} x lr at step {total:,}"
    if optim.schedule == "cosine_restarts":
        period = optim.restart_period_steps or -(-max(1, total - optim.warmup_steps) // optim.restart_cycles)
        return (f"{warm}cosine restarts every {period:,} steps ({max(1, total - optim.warmup_steps) / period:.3g} "
                f"cycles) to {optim.min_lr_ratio:g} x lr")
    if optim.schedule == "step":
        return f"{warm}x {optim.step_gamma:g} every {optim.step_every:,} steps"
    return f"{warm}constant"


def _momentum_line(flat: dict[str, Any], method: str, total: int, batch: int) -> str | None:
    if "model.base_momentum" in flat:
        return f"cosine {flat['model.base_momentum']:g} -> {flat['model.final_momentum']:g} over {total:,} steps"
    if method == "geokr" and "model.teacher_alpha" in flat:
        if flat.get("model.teacher_schedule") == "sparse":
            intervals = [max(2, int(i / batch * 16)) for i in flat["model.teacher_intervals"]]
            return (f"alpha {flat['model.teacher_alpha']:g} at sparse intervals {intervals} steps (x 16 / batch "
                    f"{batch}), the last repeated")
        return f"EMA {flat.get('model.ema_momentum')} every step"
    if "model.momentum" in flat:
        return f"constant {flat['model.momentum']:g}"
    return None


def _temperature_line(flat: dict[str, Any], total: int, steps_per_epoch: int | None) -> str | None:
    if "model.teacher_temp" not in flat:
        return None
    epochs = flat.get("model.teacher_temp_warmup_epochs")
    warmup = (round(epochs * steps_per_epoch) if epochs is not None and steps_per_epoch
              else round(flat["model.teacher_temp_warmup_fraction"] * total))
    return (f"teacher {flat['model.warmup_teacher_temp']:g} -> {flat['model.teacher_temp']:g} over "
            f"{min(warmup, total):,} steps, student {flat['model.student_temp']:g}")


def _build_method(cfg: RunConfig, dm, optim):
    """The method with the data's arguments (or a 3-band input and the method's defaults without data, and 10
    classes for knowledge terms that take theirs from the data); initial weights are not loaded (they do not change
    the memory, and a plan may be made where the file is not)."""
    from rspretrain.pretrain.run import model_arguments

    method_cls = get_method(cfg.method)
    data_kwargs = {"in_chans": 3}
    if dm is not None:
        from rspretrain.core.config import constructor_parameters

        accepted = constructor_parameters(method_cls)
        data_kwargs = {k: v for k, v in dm.model_kwargs().items() if k in accepted}
    model_args = model_arguments(cfg, dm.model_kwargs() if dm is not None else {"num_classes": 10})
    model_args.update({"init_weights": None} if cfg.model.get("init_weights") else {})
    return method_cls(**model_args, **data_kwargs, optim=asdict(optim), views=asdict(cfg.views))


def estimate_memory(model, per_device_batch: int, image_size: int, precision: str = "32-true") -> dict[str, float]:
    """Memory one rank holds while training ``model`` at ``per_device_batch`` (GB), measured on this machine.

    - weights and buffers (student, teacher, heads, queues) and gradients of the trained parameters: their sizes;
    - optimiser state: the tensors one real optimiser step allocates (momentum, Adam's moments, Adan's three);
    - activations: the tensors autograd saves for backward during one training forward on random data
      (``torch.autograd.graph.saved_tensors_hooks``, each storage counted once), under bf16 autocast for the mixed
      precisions, at batch 2 and 4, extrapolated linearly to ``per_device_batch``.

    Not counted: the allocator's fragmentation and workspace, the data loader, CUDA's context (about 0.5 GB per GPU).
    """
    from rspretrain.core.optim import build_optimizer

    def size(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    weights = size(model.parameters()) + size(model.buffers())
    trained = [p for p in model.optimised_module().parameters() if p.requires_grad]
    grads = size(trained)
    optimizer, _ = build_optimizer(model.optimised_module(), model.optim_cfg, 1)
    for p in trained:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    state = sum(size(v for v in s.values() if torch.is_tensor(v) and v.dim() > 0) for s in optimizer.state.values())
    for p in trained:
        p.grad = None
    saved = [_saved_bytes(model, b, image_size, precision) for b in (2, 4)]
    per_sample = (saved[1] - saved[0]) / 2
    activations = max(0.0, saved[0] + per_sample * (per_device_batch - 2))
    parts = {"weights_and_buffers": weights, "gradients": grads, "optimizer_state": state,
             "activations": activations}
    out = {k: v / GB for k, v in parts.items()}
    out["total"] = sum(parts.values()) / GB
    return out


def _saved_bytes(model, batch: int, image_size: int, precision: str) -> float:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    generator = torch.Generator().manual_seed(0)
    example = model.example_batch(batch, image_size, generator)
    mixed = precision.endswith("-mixed")
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
        loss, _ = model.step_loss(example)
    del loss
    return float(sum(storages.values()))


def _read_per_epoch(dm, samples_per_epoch: int | None) -> str:
    if dm is None:
        return "unknown (no data read: the size was given)"
    if not getattr(dm, "streamed", False):
        return "none after the first decode (the images are held in memory)"
    total = 0.0
    for shards, count in ((dm.dataset, samples_per_epoch), (dm.natural, samples_per_epoch)):
        if shards is None:
            continue
        manifest = shards.manifest
        total += manifest.shard_bytes / max(1, manifest.count) * (count or manifest.count)
    return f"{total / GB:.3g} GB of shards"


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as the lines ``rspretrain plan`` prints."""
    lines = [f"method: {plan['method']}" + (f" (config {plan['config']})" if plan.get("config") else "")]
    size = plan["samples_per_epoch"]
    lines.append(f"dataset size: {size:,} samples per epoch ({plan['samples_counted_from']})" if size is not None
                 else "dataset size: unknown")
    lines.append(f"global batch: {plan['global_batch']:,} = {plan['per_device_batch']} per device x {plan['devices']} "
                 f"device(s) x {plan['nodes']} node(s)"
                 + (f" x {plan['accumulate_grad_batches']} accumulated" if plan["accumulate_grad_batches"] > 1 else ""))
    if plan["steps_per_epoch"]:
        lines.append(f"steps per epoch: {plan['steps_per_epoch']:,}")
    epochs = f" ({plan['epochs']:.4g} epochs)" if plan["epochs"] is not None else ""
    lines.append(f"total steps: {plan['max_steps']:,}{epochs}")
    lines.append(f"warm-up: {plan['warmup_steps']:,} steps")
    scaling = (f" ({plan['lr_given']:g} at batch {plan['lr_reference_batch']}, {plan['lr_scaling']} scaling)"
               if plan["lr_scaling"] != "none" else "")
    lines.append(f"lr: {plan['lr']:.6g}{scaling}; {plan['lr_schedule']}")
    lines.append(f"optimizer: {plan['optimizer']}")
    if plan.get("teacher_momentum"):
        lines.append(f"teacher momentum: {plan['teacher_momentum']}")
    if plan.get("teacher_temperature"):
        lines.append(f"temperature: {plan['teacher_temperature']}")
    precision = plan["precision"]
    if precision == "auto":
        precision = "auto (bf16-mixed on hardware with bf16, else 32-true; memory below estimated in fp32)"
    lines.append(f"SyncBN: {'on' if plan['sync_batchnorm'] else 'off'}; precision: {precision}")
    if "memory_per_rank" in plan:
        m = plan["memory_per_rank"]
        lines.append(f"memory per rank (estimate): {m['total']:.2f} GB = weights+buffers "
                     f"{m['weights_and_buffers']:.2f} + gradients {m['gradients']:.2f} + optimiser "
                     f"{m['optimizer_state']:.2f} + activations {m['activations']:.2f}")
    lines.append(f"read per epoch: {plan['read_per_epoch']}")
    if "paper" in plan:
        p = plan["paper"]
        diffs = plan["differences_from_paper"]
        lines.append(f"differences from the paper's recipe ({p['source']}: {p['devices']} x {p['per_device_batch']}, "
                     f"{p['samples_per_epoch']:,} per epoch): {len(diffs) or 'none'}")
        lines += [f"  - {d}" for d in diffs]
    return "\n".join(lines)
