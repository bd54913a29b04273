"""``MultiModalDataset``: one sample = every modality of one id + every task's label map."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mmseg_heads.data.normalize import normalize
from mmseg_heads.data.readers import read_array
from mmseg_heads.data.spec import IGNORE_INDEX, DataSpec
from mmseg_heads.data.transforms import JointTransform, pad_to, round_up
from mmseg_heads.errors import UserError

Sample = dict  # {"images": {m: C×H×W}, "labels": {t: H×W}, "has_label": {t: bool}, "id": str, "size": (H, W)}


class MultiModalDataset(Dataset):
    """Reads the files of one split of a :class:`DataSpec`.

    Returns ``{"images": {modality: C×H×W float32}, "labels": {task: H×W int64},
    "has_label": {task: bool}, "id": str, "size": (H, W)}``. A sample without a label file for an
    optional task gets ``has_label=False`` and a label map of ``IGNORE_INDEX``.

    Args:
        spec: the data spec.
        split: name of one of its splits.
        transform: geometric augmentation, drawn once per sample (``None`` for evaluation).
    """

    def __init__(self, spec: DataSpec, split: str, *, transform: JointTransform | None = None):
        self.spec = spec
        self.split = split
        self.ids = spec.split_ids(split)
        self.transform = transform
        self._check_files_exist()

    def __len__(self) -> int:
        return len(self.ids)

    def _check_files_exist(self) -> None:
        """Stat every required file up front so a missing one stops the run before training."""
        for sample_id in self.ids:
            for name in self.spec.modalities:
                path = self.spec.modality_file(name, sample_id)
                if not path.is_file():
                    raise UserError(
                        f"file not found: {path} (id {sample_id!r})",
                        file=self.spec.path,
                        field=f"modalities.{name}.files",
                    )
            for name, task in self.spec.tasks.items():
                path = self.spec.label_file(name, sample_id)
                if not task.optional and not path.is_file():
                    raise UserError(
                        f"label file not found: {path} (id {sample_id!r}); mark the task `optional: true` "
                        "if some samples have no label",
                        file=self.spec.path,
                        field=f"tasks.{name}.labels",
                    )

    def read_images(self, sample_id: str) -> dict[str, np.ndarray]:
        images = {}
        for name, modality in self.spec.modalities.items():
            path = self.spec.modality_file(name, sample_id)
            array = read_array(path)
            array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
            if array.shape[0] != modality.channels:
                raise UserError(
                    f"{path} has {array.shape[0]} channels but the spec says {modality.channels}",
                    file=self.spec.path,
                    field=f"modalities.{name}.channels",
                )
            images[name] = normalize(array.astype(np.float32), modality.normalize)
        return images

    def read_labels(self, sample_id: str, size: tuple[int, int]) -> tuple[dict, dict]:
        labels, has_label = {}, {}
        for name, task in self.spec.tasks.items():
            path = self.spec.label_file(name, sample_id)
            if task.optional and not path.is_file():
                labels[name] = np.full(size, IGNORE_INDEX, dtype=np.int64)
                has_label[name] = False
                continue
            labels[name] = task.map_labels(read_array(path), path)
            has_label[name] = True
        return labels, has_label

    def _check_sizes(self, sample_id: str, images: dict, labels: dict) -> tuple[int, int]:
        sizes = {f"modality {k}": v.shape[-2:] for k, v in images.items()}
        sizes |= {f"task {k}": v.shape for k, v in labels.items()}
        if len(set(sizes.values())) > 1:
            listing = ", ".join(f"{k} {h}×{w}" for k, (h, w) in sizes.items())
            raise UserError(
                f"id {sample_id!r}: files differ in size: {listing}", file=self.spec.path
            )
        return tuple(next(iter(sizes.values())))

    def __getitem__(self, index: int) -> Sample:
        sample_id = self.ids[index]
        images = self.read_images(sample_id)
        size = next(iter(images.values())).shape[-2:]
        labels, has_label = self.read_labels(sample_id, size)
        size = self._check_sizes(sample_id, images, labels)
        if self.transform is not None:
            # One draw from torch's RNG: DataLoader seeds it per worker and per epoch.
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
            images, labels = self.transform(images, labels, rng)
        return {
            "images": {k: torch.from_numpy(v) for k, v in images.items()},
            "labels": {k: torch.from_numpy(v) for k, v in labels.items()},
            "has_label": has_label,
            "id": sample_id,
            "size": tuple(int(s) for s in size),
        }


def collate(samples: list[Sample], multiple: int = 32) -> dict:
    """Stack samples, padding each batch to a common size that is a multiple of ``multiple``."""
    height = round_up(
        max(s["images"][next(iter(s["images"]))].shape[-2] for s in samples), multiple
    )
    width = round_up(max(s["images"][next(iter(s["images"]))].shape[-1] for s in samples), multiple)
    padded = []
    for s in samples:
        images, labels = pad_to(
            {k: v.numpy() for k, v in s["images"].items()},
            {k: v.numpy() for k, v in s["labels"].items()},
            height,
            width,
        )
        padded.append((images, labels))
    first = samples[0]
    return {
        "images": {
            k: torch.stack([torch.from_numpy(p[0][k]) for p in padded]) for k in first["images"]
        },
        "labels": {
            k: torch.stack([torch.from_numpy(p[1][k]) for p in padded]) for k in first["labels"]
        },
        "has_label": {
            k: torch.tensor([s["has_label"][k] for s in samples]) for k in first["has_label"]
        },
        "id": [s["id"] for s in samples],
        "size": [s["size"] for s in samples],
    }
