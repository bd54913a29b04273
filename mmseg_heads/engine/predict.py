"""Predict masks for files a data spec's patterns describe: one mask per task per input.

:func:`predict` is the command; the steps are modules of their own: matching input files to
modalities and sample ids (:mod:`~mmseg_heads.engine.predict_inputs`), reading and segmenting
their planes (:mod:`~mmseg_heads.engine.predict_segment`) and writing PNG or NIfTI masks and
overlays (:mod:`~mmseg_heads.engine.predict_write`). Every file is encoded in memory and written
atomically (:func:`mmseg_heads.atomic.write_atomic`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mmseg_heads.data.planes import with_context
from mmseg_heads.data.spec import DataSpec
from mmseg_heads.engine.precision import resolve_precision
from mmseg_heads.engine.predict_inputs import resolve_inputs
from mmseg_heads.engine.predict_segment import prepare_planes, read_sample, segment
from mmseg_heads.engine.predict_write import write_masks
from mmseg_heads.engine.run import Run, load_run, read_run_checkpoint, run_data_spec
from mmseg_heads.engine.threads import configure_threads
from mmseg_heads.errors import UserError

log = logging.getLogger(__name__)


def resolve_device(name: str | None) -> torch.device:
    """``None`` -> CUDA where there is one, else CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"not a device: {exc}", field="--device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine", field="--device")
    return device


def run_spec(checkpoint: str | Path, data: str | Path | None = None) -> DataSpec:
    """The data spec a prediction reads inputs with: ``data`` (checked to have the checkpoint's
    modalities and tasks), else the checkpoint's own. Reads no weights into a model, so that
    input errors show before the model is built."""
    state, path = read_run_checkpoint(checkpoint)
    return run_data_spec(state, path, data)


def predict(
    checkpoint: str | Path,
    inputs: list[str | Path],
    out: str | Path,
    *,
    modality_files: list[str] | None = None,
    data: str | Path | None = None,
    overlay: bool = False,
    allow_missing: bool = False,
    batch_size: int = 8,
    device: str | None = None,
    window: int | None = None,
    overlap: float | None = None,
    tta: tuple[str, ...] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Segment every input with a checkpoint and write its masks; returns the files written.

    Args:
        checkpoint: a run directory (its ``checkpoints/best.pt``) or a checkpoint file.
        inputs: files of any modality; each is matched to its modality and id by the patterns.
        out: output folder; masks go to ``out/<task>/<id>.png`` or ``.nii.gz``.
        modality_files: ``["NAME=PATH", …]``: without ``inputs``, the files of one sample;
            with ``inputs``, files that replace their modality's in every input's sample.
        data: another data spec with the same modalities and tasks, whose file patterns and
            normalisation are used instead of the checkpoint's (another layout on disk).
        overlay: also write ``out/<task>/<id>_overlay.png``.
        allow_missing: segment without a modality whose file is missing (the trunk leaves it
            out of the fusion) instead of failing.
        batch_size: planes per forward pass (the slices of a volume).
        device: ``cpu``, ``cuda``, ``cuda:1``…; default CUDA where available.
        window, overlap, tta: replace the run's ``eval`` options of the same names (sliding
            window, test-time flips; :class:`~mmseg_heads.engine.inference.Inference`).
        overwrite: replace files in ``out`` that ``predict`` did not write (its own masks it
            always replaces).

    Raises:
        UserError: a problem with the checkpoint, the inputs or the arguments.
        WriteError: an output file could not be written (a full disk, no permission); the file
            is left as it was before, and no temp file stays behind.
    """
    spec = run_spec(checkpoint, data)
    items = resolve_inputs(spec, inputs, modality_files, allow_missing=allow_missing)
    target = resolve_device(device)
    run = load_run(checkpoint, data)
    config, model = run.config, run.model
    log.info("threads: %d (%s)", *configure_threads(config.train["threads"]))
    inference = run.inference(window, overlap, tta)
    precision = resolve_precision(config.train["precision"], target)
    model = model.to(target).eval()
    written: list[Path] = []
    for item in items:
        sample = read_sample(item, spec)
        masks = segment(
            model,
            sample.images,
            device=target,
            precision=precision,
            batch_size=batch_size,
            inference=inference,
        )
        written += write_masks(
            sample, masks, spec, Path(out), with_overlay=overlay, overwrite=overwrite
        )
        log.debug("predicted %s from %s", item.id, item.files)
    return written


def predict_arrays(
    run: Run,
    images: dict[str, np.ndarray],
    *,
    device: str | None = None,
    batch_size: int = 8,
    window: int | None = None,
    overlap: float | None = None,
    tta: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Masks for images already in memory: no files read or written.

    Args:
        run: a loaded run (:func:`~mmseg_heads.engine.run.load_run`).
        images: ``{modality: array}`` as a file of that modality would hold it (raw values:
            ``H×W``, ``H×W×C``, or ``S×H×W(×C)`` for ``S`` slices of a volume); each is clipped and
            normalised as the run's data spec says, with its 2-D context for volumes.
        device: ``cuda``, ``cpu`` or ``None`` (CUDA where there is one).
        batch_size: planes (or windows) per forward pass.
        window, overlap, tta: replace the run's ``eval`` options of the same names.

    Returns:
        ``{task: H×W uint8}`` (``S×H×W`` for ``S`` slices): class indices.

    Raises:
        UserError: a modality is missing or has the wrong channel count, or sizes differ.
    """
    spec = run.config.spec
    missing = [m for m in spec.modalities if m not in images]
    if missing:
        raise UserError(
            f"no image for {', '.join(missing)} (modalities: {', '.join(spec.modalities)})"
        )
    planes = {}
    for name, modality in spec.modalities.items():
        array = np.asarray(images[name])
        stacked = array.ndim == 4 or (array.ndim == 3 and modality.channels == 1)
        stack = array if stacked else array[None]
        prepared = prepare_planes(stack, modality, Path(f"<{name} array>"))
        planes[name] = with_context(prepared, spec.context)
    target = resolve_device(device)
    precision = resolve_precision(run.config.train["precision"], target)
    inference = run.inference(window, overlap, tta)
    masks = segment(
        run.model.to(target),
        planes,
        device=target,
        precision=precision,
        batch_size=batch_size,
        inference=inference,
    )
    single = all(
        np.asarray(images[m]).ndim == 2 + (spec.modalities[m].channels > 1) for m in spec.modalities
    )
    return {task: mask[0] if single else mask for task, mask in masks.items()}
