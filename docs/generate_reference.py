"""Render docs/config.md and docs/data_spec.md from the schemas in the code.

    python docs/generate_reference.py           # write both pages
    python docs/generate_reference.py --check   # exit 1 if either page is out of date

The tables come from :func:`mmseg_heads.schema.doc_rows` over
:data:`mmseg_heads.config.CONFIG_SCHEMA` and :data:`mmseg_heads.data.spec.DATA_SPEC_SCHEMA`, so a
key added to a schema shows up here on the next run (and ``tests/test_docs_reference.py`` fails
until it does). Hand-written text lives in this file: the intros, and ``NOTES`` that add to a
key's schema doc. Importable: ``render_pages()`` returns ``{file name: text}``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

from mmseg_heads.config import CONFIG_SCHEMA
from mmseg_heads.data.augment import PRESETS, TRANSFORMS
from mmseg_heads.data.spec import DATA_SPEC_SCHEMA
from mmseg_heads.schema import DocRow, Node, doc_rows

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent

CONFIG_EXAMPLE = "configs/demo.yaml"
DATA_SPEC_EXAMPLE = "data_specs/demo.yaml"

# ---------------------------------------------------------------------------------------------
# Hand-written text
# ---------------------------------------------------------------------------------------------

_GATE_NOTE = "See architecture.md, Heads and gates."

#: Added to the schema's doc of a key (or standing alone where the schema has none).
#: Every key here must exist in a schema: the docs test fails on a stale note.
NOTES: dict[str, str] = {
    # config
    "data": "`--data` of `evaluate` replaces it for an external test set.",
    "model.encoders": "Every modality must have exactly one encoder.",
    "model.encoders.<name>.name": "Any smp encoder, `tu-<timm name>`, or a name registered in `ENCODERS`.",
    "model.encoders.<name>.pretrained": "Unset: `model.pretrained`.",
    "model.pretrained": "`imagenet`: the local cache first, else a download; offline it fails at once with a message. A PATH is a local 3-channel state dict (a `state_dict` entry is unwrapped; a whole-model file works too: the key prefix such as `vgg.` or `module.` that matches most tensors is dropped), loaded by name and shape (at least one tensor must match; the others keep their initial values, with a warning); the first convolution is then adapted to the modality's channels as smp does for ImageNet weights. A relative PATH is relative to the working directory.",
    "model.depth": "3, 4 or 5 stages give a deepest stride of 8, 16 or 32.",
    "model.fusion": "`sum` rescales by sources / sources present; `attention` weights the sources per channel (softmax over the sources present in each sample). See architecture.md.",
    "model.modality_dropout": "Per encoder group. A dropped group's features are masked out of the fusion (never replaced by an encoding of a zero image); at least one group stays per sample. Not applied in evaluation.",
    "model.decoder_channels": "One value per halving from the deepest stride down to stride 1: 5 values for `depth: 5`, 4 for 4, 3 for 3.",
    "model.heads.<name>.source": "A head with a source other than `fused` needs `decoder: own`.",
    "model.heads.<name>.decoder": "The shared decoder is built only when some head uses it.",
    "model.heads.<name>.gate": _GATE_NOTE,
    "loss.task_weighting": "See losses.md for the uncertainty formula.",
    "loss.task_weights": "The total loss is the sum of `weight × task loss`.",
    "loss.<name>": "A listed task uses only the terms it lists; give at least one. Terms: see losses.md.",
    "loss.<name>.ce": "A bare number is the weight.",
    "loss.<name>.ce.weight": "Factor of this term in the task loss.",
    "loss.<name>.ce.class_weights": "Weighted mean over valid pixels, as `torch.nn.functional.cross_entropy`.",
    "loss.<name>.ce.label_smoothing": "Label smoothing of the cross-entropy (0 to 1).",
    "loss.<name>.dice": "A bare number is the weight.",
    "loss.<name>.dice.weight": "Factor of this term in the task loss.",
    "loss.<name>.dice.smooth": "Added to numerator and denominator of each class's Dice.",
    "loss.<name>.dice.per_sample": "Dice per image and class instead of pooled over the batch.",
    "loss.<name>.focal": "A bare number is the weight.",
    "loss.<name>.focal.weight": "Factor of this term in the task loss.",
    "loss.<name>.focal.gamma": "Focusing exponent: `(1 - p_t)^gamma`.",
    "loss.<name>.focal.alpha": "Unset: no alpha factor.",
    "train": "Training; the run directory gets `config.yaml`, `data_spec.yaml`, `checkpoints/{last,best}.pt`, `metrics.jsonl`.",
    "train.epochs": "The cosine schedule spans all steps of all epochs.",
    "train.batch_size": "Samples per step (also used for evaluation).",
    "train.crop": "Images smaller than the crop are padded first (padding is ignored by losses and metrics).",
    "train.lr": "Learning rate at the start of training.",
    "train.weight_decay": "Weight decay of the optimizer.",
    "train.optimizer": "`sgd` uses momentum 0.9.",
    "train.schedule": "`cosine`: per step from `lr` down to 0; `constant`: `lr` throughout.",
    "train.precision": "`fp32`: no autocast.",
    "train.seed": "Seeds Python, NumPy, torch and the loader's shuffle.",
    "train.out": "An existing run directory is never overwritten.",
    "eval": "Evaluation, after every epoch (for `best.pt`) and by `mmseg-heads evaluate`.",
    "eval.select_by": "`mean_foreground_f`: mean over tasks of each task's macro foreground F (tasks where it is undefined are left out).",
    # data spec
    "root": "`--data-root DIR` of `mmseg-heads inspect` and `train` replaces it (in Python: `load_data_spec(path, data_root=...)`).",
    "modalities": "The first one also decides which ids exist.",
    "modalities.<name>.channels": "A file with another channel count is an error.",
    "modalities.<name>.normalize": "Details below the tables.",
    "modalities.<name>.normalize.mean": "Per-channel mean in raw units, form `{mean, std}`.",
    "modalities.<name>.normalize.std": "Per-channel standard deviation in raw units, form `{mean, std}`.",
    "modalities.<name>.normalize.scale": "Multiply raw values by this, form `{scale}` (e.g. 0.00392 = 1/255).",
    "tasks.<name>.classes": "Class index 0 is treated as background by `macro_foreground_f`. At most 254 classes.",
    "tasks.<name>.values": "Give `values` or `threshold`, not both.",
    "tasks.<name>.threshold": "Needs exactly 2 classes.",
    "tasks.<name>.ignore": "Their pixels get index 255.",
    "tasks.<name>.annotated_on": "Must name modalities; shown in reports.",
    "tasks.<name>.label_format": "`colour` needs a distinct colour for every class in `colors` and takes no `values`, `threshold` or `ignore`. Details below the tables.",
    "tasks.<name>.colors": 'Keys must be classes of the task. Quote hex colours (`scar: "#ffff00"`): unquoted, YAML reads `#` on as a comment. Colours never change the class indices written. Details below the tables.',
    "tasks.<name>.ignore_colors": "Their pixels get index 255. Not a class's colour.",
    "splits": "Details below the tables.",
    "splits.<name>.fraction": "Fraction splits share one shuffle; their sum must be at most 1.",
    "splits.<name>.seed": "The shuffle uses the `seed` of the first fraction split declared.",
    "splits.<name>.ids": "With a `volume` section: case ids, never slice ids.",
    "modalities.<name>.clip_percentiles": "Two values from 0 to 100, low < high. Unset: no clipping.",
    "volume": "Omit it for 2-D images. Details below the tables.",
    "volume.slice_axis": "Axis 2 is the usual slice stack of a NIfTI volume (axial for brain MRI, short axis for cardiac MRI).",
    "volume.keep": "Class 0 and ignored pixels do not count as labelled.",
    "volume.labelled_weight": "Must be > 0; 1 draws uniformly. Used by `mmseg_heads.data.sampling.train_sampler`.",
    "volume.cache": "0 caches nothing.",
}

CONFIG_INTRO = """\
# Config reference

A config is one YAML file describing one experiment: the data spec it reads (`data`), the network
(`model`), the loss of each task (`loss`), training (`train`) and evaluation (`eval`).
`mmseg-heads train CONFIG [key=value …]` trains it; `mmseg-heads inspect CONFIG` validates it and
prints the data, the trunk's levels and parameter counts without training.

This page is generated by `docs/generate_reference.py` from `mmseg_heads.config.CONFIG_SCHEMA`;
edit the schema or the script, then run `python docs/generate_reference.py`.

## Loading rules

- **Overrides.** `key.sub=value` arguments after the config path replace or add one key each; the
  value is parsed as YAML: `train.lr=3e-4`, `model.fusion=sum`, `'loss.shapes={ce: 1.0}'`.
- **Validation first.** The whole file is checked before any work and every problem is reported
  at once, one line each as `file: dotted.field: message` (unknown keys with a "did you mean",
  wrong types, values outside a range or a list of choices). The CLI exits with status 2.
- **Cross-references** against the data spec are checked next: every modality has exactly one
  encoder; `model.heads`, `loss` and `loss.task_weights` name tasks of the spec; a head's `source`
  is `fused` or an encoder key; `class_weights` and a list `alpha` have one value per class;
  `eval.select_by` is `mean_foreground_f` or a task.
- **Defaults.** An omitted key takes the default in the tables below; an omitted `loss`, `train` or
  `eval` section takes all of its defaults. A key set to `null` counts as omitted.
- **Paths.** `data` is relative to the config file.

`<name>` in a key stands for a name you choose:

- `model.encoders.<name>`: a modality; a group `"A+B"`, whose modalities are stacked as channels
  into one encoder (early fusion); or `shared`, one encoder whose weights every modality goes
  through separately (the modalities need equal channel counts; `shared` cannot be mixed with
  other keys).
- `model.heads.<name>`, `loss.<name>`, `loss.task_weights.<name>`: a task of the data spec. A task
  with no entry in `model.heads` gets `{source: fused, decoder: shared}`; one with no entry in
  `loss` gets `{ce: 1.0, dice: 1.0}`.

Encoder names are smp's (`resnet18`, `resnet50`, `vgg16`, `efficientnet-b0`, …),
`tu-<timm model name>` for any timm backbone, or your own registered in `ENCODERS`
([architecture.md](architecture.md#an-encoder)); an unknown name is reported with the closest
names. `pretrained: imagenet` takes the weights from the local cache, else downloads them, and
fails at once with a message when offline. How levels of different
encoders are fused: [architecture.md](architecture.md). Loss terms: [losses.md](losses.md). Scores:
[metrics.md](metrics.md).

Training options in context (freezing, schedules, resuming): [training.md](training.md).
"""

DATA_SPEC_INTRO = """\
# Data spec reference

A data spec is one YAML file describing files on disk: the input modalities, the tasks (each
with its own label set) and the splits. A config points to it with `data:`;
`mmseg-heads inspect SPEC` validates it and prints modalities, tasks, classes, samples per split
and the pixel count of every class.

This page is generated by `docs/generate_reference.py` from
`mmseg_heads.data.spec.DATA_SPEC_SCHEMA`; edit the schema or the script, then run
`python docs/generate_reference.py`.

## Files and ids

- **Paths** are relative to the spec file: `root` is resolved against the spec's folder, and the
  `files` and `labels` patterns against `root`. Absolute paths are used as they are.
- **Ids** are found on disk through the **first modality's** `files` pattern: `{id}` matches any
  text without `/`, and every `{id}` in one pattern must match the same text. Every other modality
  and every non-optional task must have a file for each id of a split; a missing one stops the run
  before training, naming the file and the spec field.
- **Sizes.** All modalities and labels of one id must have the same height and width.
- **Readers** are chosen by extension: `.png .jpg .jpeg .bmp .tif .tiff` (Pillow; a 16-bit PNG
  keeps its 16 bits), `.npy` (NumPy) and `.nii .nii.gz` (NIfTI through nibabel:
  `pip install "mmseg-heads[nifti]"`; the voxel dtype is kept: int16, uint8, float). A palette PNG
  is read as its indices, never as colours; a label file with 3 or 4 colour channels is an error,
  unless the task says `label_format: colour` (see Colour label images). A NIfTI file with more
  than one slice needs a `volume` section.

## Labels: raw values to class indices

Each task maps the raw values of its label files to class indices `0 … len(classes) - 1`:

- **Identity** (no `values`, no `threshold`): the raw value is the class index. A value outside
  the classes is an error.
- **`values`** maps a raw value to a class index or to `"ignore"`; the key `other` catches every
  raw value not listed. A raw value with no mapping (and no `other`) is an error naming the file
  and the values; it is never silently ignored.
- **`threshold`**: raw > threshold is class 1, else 0 (binary masks saved as 0/255:
  `threshold: 127.5`). Needs exactly 2 classes.
- **`ignore`** lists raw values whose pixels get index **255**, which no loss and no metric sees
  (nor does the padding added to batches).
- **`optional: true`**: a sample without this task's label file still trains and evaluates the
  other tasks; for this task it is masked out (`has_label` false).

## Class colours

`colors` gives classes of a task their colour wherever classes are drawn: the palette of the PNG
masks and the overlays `mmseg-heads predict` writes, and the predictions in the report's sample
figures (`report.json` keeps them as `tasks.<task>.palette`). A colour is `[r, g, b]` (whole
numbers 0–255) or a quoted `"#rrggbb"`; classes not listed keep the default palette (class 0 black,
then 16 fixed colours, then golden-ratio hue steps), so one entry changes one class:

```yaml
tasks:
  scar:
    classes: [background, scar]
    colors: {scar: "#ffff00"}        # same as [255, 255, 0]
```

`data_specs/voc_style_two_modalities.yaml` lists the 21 colours of the VOC colormap, so masks look
like VOC's `SegmentationClass` PNGs. A class name that is not a class of the task, a list that is
not three numbers, a number outside 0–255 or a string that is not `#` and six hex digits is an
error naming the file and `tasks.<task>.colors.<class>`.

## Colour label images

Label images saved in RGB colours (colour masks re-saved as RGB, Cityscapes' `*_color.png`, most
annotation tools' exports) are read with `label_format: colour`: each pixel's colour is its
class through the task's `colors`, and the colours listed in `ignore_colors` get index **255**,
which no loss and no metric sees (they take the place of `ignore`, which lists raw values):

```yaml
tasks:
  segmentation:
    labels: "SegmentationClassRGB/{id}.png"
    label_format: colour
    classes: [background, aeroplane, bicycle, bird]   # … and the rest of VOC's 21
    colors:
      background: [  0,   0,   0]
      aeroplane:  [128,   0,   0]
      bicycle:    [  0, 128,   0]
      bird:       "#808000"                  # same as [128, 128, 0]
    ignore_colors: [[224, 224, 192]]         # VOC's object borders
```

- **Every class needs a colour**, and no two classes share one: otherwise a pixel's class would be
  missing or ambiguous. Both are errors naming `tasks.<task>.colors` and the classes without a
  colour, or those sharing one; an ignore colour that is a class's is an error naming
  `tasks.<task>.ignore_colors`. `values`, `threshold` and `ignore` belong to index labels and are
  errors here.
- **A colour of no class** is an error, never a silent ignore: `mmseg-heads inspect` lists the
  colours with their pixel counts and the files holding them (`2 colours not in
  tasks.segmentation.colors: (12, 250, 3) ×1,204 px, …`); add them to `colors` or to
  `ignore_colors`. JPEG colour masks smear colours along class edges: save labels as PNG.
- **RGB or opaque RGBA.** An RGBA image is read as its RGB when every pixel's alpha is 255; a
  pixel that is not fully opaque is an error naming the file. A palette PNG is read as the colours
  of its palette, a greyscale image is an error naming the file and `tasks.<task>.label_format`
  (its values are class indices: `label_format: index` reads them).
- **Predictions** use the same `colors`, so predicted masks come out in the colours of the labels.
- VOC's own `SegmentationClass` PNGs are palette PNGs: `label_format: index` (the default) reads
  their indices directly, with `ignore: [255]` for the borders
  (`data_specs/voc_style_two_modalities.yaml`); `colour` is for masks saved as RGB.
- Colour labels are 2-D images: `label_format: colour` with a `volume` section is an error.

## Nested tasks: `inside`

Some label sets nest: in MyoPS, scar lies inside edema and edema inside the myocardium. Per-task
heads predict each task on its own, so a scar pixel may land outside the predicted edema. A task
declares its parents with `inside: {<task>: [classes…]}`:

```yaml
tasks:
  edema: {labels: …, classes: [background, edema], inside: {anatomy: [myocardium]}}
  scar:  {labels: …, classes: [background, scar],  inside: {edema: [edema]}}
```

Nesting sets a nested task's foreground outside its parents' predicted classes to background;
parents are nested first, so here scar is held inside the nested edema. `eval.nesting: both`
(the default) reports the nested tasks' scores with nesting beside the headline scores, which
stay those of the masks as the model gives them (report.md's Nesting table, `with_nesting` in
report.json); `on` makes the nested masks the headline, the per-epoch selection and what `predict`
writes; `off` neither. Nesting only removes foreground, so where a parent is predicted poorly it
removes a good child too (docs/results.md). Training is unchanged. The rule names another task
and its classes; a task inside itself (also through others) is an error.
`data_specs/myops2020.yaml` declares both rules.

## Normalisation

`normalize` is applied per image and channel after reading: `zscore` (subtract the mean, divide by
the standard deviation), `minmax` (to [0, 1]), `imagenet` (divide 8-bit values by 255, then ImageNet
mean and std: 3-channel RGB), `none`, `{mean: [...], std: [...]}` (raw units, one value per
channel) or `{scale: s}` (multiply).

`clip_percentiles: [low, high]` first clips each image and channel to its own `low`-th and
`high`-th percentiles (0 to 100), so that a few extreme values (bright vessels or artefacts in MRI,
far depth readings) do not squeeze everything else into a narrow range:
`{normalize: zscore, clip_percentiles: [0.5, 99.5]}`. With a `volume` section, "image" means one
2-D slice.

## Volumes: 3-D files as 2-D slices

With a `volume` section, every modality and label file of an id is a 3-D array (`X×Y×Z`, or
`X×Y×Z×C` for C channels), all of one id on the same grid, and each slice across `slice_axis` is a
sample. The file ids are then **cases** and the sample ids are `"{case}#{slice}"`
(`Case3001#2`); a slice keeps the array's orientation (its rows are the first remaining axis).

- **`keep`**: `all` slices; `labelled`, the slices where some task's mapped label has a pixel
  that is neither class 0 nor ignored; `labelled+N`, those and N slices on each side. Finding
  labelled slices reads every label volume once when the dataset is built, which also checks that
  every raw value has a class before training starts.
- **Splits take whole cases**: `ids` files list case ids, and `pattern` and `fraction` work on
  case ids, so the slices of one case never straddle train and val.
- **`labelled_weight`** above 1 makes training draw labelled slices that many times as often
  as the others (with replacement, `len(dataset)` draws per epoch), for when `keep: all` or
  `labelled+N` leaves many empty slices.
- **`cache`**: decoded volumes of that many cases are kept in memory per dataset and per loader
  worker (least recently used first out), so that the slices of a case decompress its `.nii.gz`
  files once. Memory per worker is about `cache` × the decoded size of one case's files.

## Splits

Each split gives exactly one of:

- **`ids`**: a text file with one id per line. It is looked up next to the spec file first, else
  under `root`. An id with no files is an error.
- **`pattern`**: a regular expression searched in each id (like `grep`, not a full match):
  `pattern: "Case30[01]"`.
- **`fraction`**: a share of the ids not claimed by the `ids`/`pattern` splits. All fraction splits
  share one seeded shuffle and take consecutive shares of it in the order they are declared, so
  they never overlap; the fractions may add up to at most 1.

An empty split is an error.
"""


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Escape what would break a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def format_default(shown: str) -> str:
    """A DocRow default (Python repr) as the YAML a user would write."""
    if shown in ("required", "(section)"):
        return shown
    if shown == "":
        return "—"
    try:
        value = ast.literal_eval(shown)
    except (ValueError, SyntaxError):
        return f"`{shown}`"
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("...").strip()
    return f"`{text}`"


def meaning(row: DocRow) -> str:
    parts = [p for p in (row.doc.strip(), NOTES.get(row.key, "").strip()) if p]
    parts = [p[:-1] if p.endswith(".") and not p.endswith("...") else p for p in parts]
    return ". ".join(parts) + "." if parts else ""


def _sections(rows: Iterable[DocRow]) -> dict[str, list[DocRow]]:
    sections: dict[str, list[DocRow]] = {}
    for row in rows:
        sections.setdefault(row.key.split(".")[0], []).append(row)
    return sections


def render_tables(schema: Node) -> str:
    """One table per top-level section; top-level scalar keys share one table."""
    sections = _sections(doc_rows(schema))
    scalars = [rows[0] for rows in sections.values() if len(rows) == 1]
    nested = {name: rows for name, rows in sections.items() if len(rows) > 1}
    header = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    out: list[str] = []

    def table(rows: list[DocRow]) -> None:
        out.extend(header)
        for row in rows:
            out.append(
                f"| `{_cell(row.key)}` | {_cell(row.type)} | {_cell(format_default(row.default))} "
                f"| {_cell(meaning(row))} |"
            )

    if scalars:
        out += ["### Top-level keys", ""]
        table(scalars)
        out.append("")
    for name, rows in nested.items():
        out += [f"### `{name}`", ""]
        table(rows)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _example(relative: str, what: str) -> str:
    text = (REPO / relative).read_text()
    return f"## Example\n\n{what} (`{relative}`):\n\n```yaml\n{text.rstrip()}\n```\n"


AUGMENT_INTRO = """\
## Augmentations

`train.augment` is a preset name or an ordered list; an entry is a transform's name (its
defaults) or `{name: {options}}`. Geometric transforms are drawn once per sample and move every
modality (bilinear) and every label map (nearest) alike; pixels that come from outside the image
are 0 in images and `ignore` in labels. Intensity transforms change the modalities they select
(`modalities`, default all), each drawn on its own, and never labels. Each sample: resize
(`train.resize`), crop placement (`train.crop_foreground`), the geometric transforms in list order
(on a window around the crop), the crop, then the intensity transforms in list order; `train.hflip`
and `train.vflip` add flips after the list. How to choose: [training.md](training.md#augmentation).
"""


def render_augmentations() -> str:
    out = [AUGMENT_INTRO]
    for name in TRANSFORMS.names():
        cls = TRANSFORMS.get(name)
        doc = " ".join(cls.__doc__.split()).replace("``", "`")
        out.append(f"### `{name}` ({cls.kind})\n\n{doc}\n")
        out.append("| option | type | default | meaning |\n| --- | --- | --- | --- |")
        for row in doc_rows(cls.schema()):
            out.append(
                f"| `{row.key}` | {_cell(row.type)} | {format_default(row.default)} | "
                f"{_cell(meaning(row))} |"
            )
        out.append("")
    out.append("### Presets\n")
    for name, entries in PRESETS.items():
        lines = [
            "- " + yaml.safe_dump(e, default_flow_style=True, sort_keys=False, width=1000).strip()
            for e in entries
        ]
        text = "\n".join(lines) or "[]"
        out.append(f"`augment: {name}` expands to:\n\n```yaml\n{text}\n```\n")
    return "\n".join(out)


def render_config() -> str:
    return "\n".join(
        [
            CONFIG_INTRO,
            "## Keys\n",
            render_tables(CONFIG_SCHEMA),
            render_augmentations(),
            _example(CONFIG_EXAMPLE, "The demo's recipe"),
        ]
    )


def render_data_spec() -> str:
    return "\n".join(
        [
            DATA_SPEC_INTRO,
            "## Keys\n",
            render_tables(DATA_SPEC_SCHEMA),
            _example(DATA_SPEC_EXAMPLE, "The demo's data spec"),
        ]
    )


def render_pages() -> dict[str, str]:
    """``{file name under docs/: text}``."""
    return {"config.md": render_config(), "data_spec.md": render_data_spec()}


def stale_pages(docs: Path = DOCS) -> list[str]:
    """Names of pages under ``docs`` that differ from what would be written (or are missing)."""
    stale = []
    for name, text in render_pages().items():
        path = docs / name
        if not path.is_file() or path.read_text() != text:
            stale.append(name)
    return stale


def write_pages(docs: Path = DOCS) -> list[Path]:
    paths = []
    for name, text in render_pages().items():
        path = docs / name
        path.write_text(text)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a page is out of date; write nothing"
    )
    parser.add_argument(
        "--docs", type=Path, default=DOCS, help="folder of the pages (default: this script's)"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(args.docs)
        for name in stale:
            print(
                f"{args.docs / name} is out of date; run python docs/generate_reference.py",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in write_pages(args.docs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
