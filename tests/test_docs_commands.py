"""The commands the docs show run, and write what the docs say they write.

Every fenced ```bash block of the pages in ``DOCS`` is split into command lines, and each line is
run, in the page's order, in a temporary workspace: a copy of ``configs/`` and ``data_specs/``,
the config files the pages show in full, and a tiny VOC-style folder. The commands share one demo
run (``mmseg-heads demo`` writes the data every ``data_specs/demo.yaml`` config reads).

Every documented command must have an entry in ``COMMANDS``, saying how it is made small enough
for CI and what it must write or print; a command a page adds without an entry fails
``test_every_documented_command_has_an_entry``, so the docs cannot grow untested commands.
Only ``pip install`` and ``pytest`` lines are not run (``skip_reason`` says why). Nothing is
written into the repository and nothing is downloaded (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import io
import re
import shlex
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mmseg_heads.cli.main import main

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/zh/快速上手.md", "docs/migrating_from_unet_pytorch.md")

# ---------------------------------------------------------------------------------------------
# How each documented command runs in CI
# ---------------------------------------------------------------------------------------------

#: Appended to every `train` (later overrides win): one epoch on 32×32 crops (the smallest
#: `train.crop`), no worker processes. The documented settings train for minutes to hours; these
#: keep every code path (data, trunk, heads, losses, evaluation, checkpoints) and take seconds.
TINY = "train.epochs=1 train.crop=32 train.workers=0"


@dataclass(frozen=True)
class Run:
    """How one documented command runs here and what it must produce.

    Attributes:
        command: what runs instead of the documented line (made small, or pointed at the test
            data); ``None`` runs the line as documented.
        writes: files (relative to the workspace) that must exist afterwards.
        prints: text its standard output must contain.
        shown: the page shows its output in the ```text block right after the command's block;
            every line of that block must be in the real output.
    """

    command: str | None = None
    writes: tuple[str, ...] = ()
    prints: tuple[str, ...] = ()
    shown: bool = False


def run_dir(path: str) -> tuple[str, ...]:
    """What `mmseg-heads train` writes into its run directory (README, "Commands")."""
    files = ("config.yaml", "data_spec.yaml", "checkpoints/best.pt", "checkpoints/last.pt")
    return tuple(f"{path}/{name}" for name in (*files, "metrics.jsonl"))


def report(folder: str) -> tuple[str, ...]:
    return tuple(f"{folder}/report.{ext}" for ext in ("json", "md", "html"))


DEMO = "mmseg_demo"
LEVELS = "trunk levels for a 512×512 input (channels@height×width):"
VOC = "--data-root VOCdevkit/VOC2007"

COMMANDS: dict[str, Run] = {
    # README.md. `demo --epochs 1`: the demo trains 20 epochs; one writes the same files.
    "mmseg-heads demo": Run(
        "mmseg-heads demo --epochs 1",
        writes=(f"{DEMO}/data/demo.yaml", f"{DEMO}/demo.yaml")
        + run_dir(f"{DEMO}/run")
        + report(f"{DEMO}/run/report_demo_val"),
    ),
    # README's job 1: data_specs/my_data.yaml's `root` is the demo's data, so the commands run
    # as written after `mmseg-heads demo`.
    "mmseg-heads inspect configs/my_fused.yaml --size 512": Run(
        None,
        prints=(LEVELS, "encoder optical", "vgg16", "resnet50"),
    ),
    "mmseg-heads train configs/my_fused.yaml": Run(
        f"mmseg-heads train configs/my_fused.yaml {TINY}",
        writes=run_dir("runs/my_fused"),
    ),
    "mmseg-heads train configs/modality_branches.yaml": Run(
        f"mmseg-heads train configs/modality_branches.yaml {TINY}",
        writes=run_dir("runs/modality_branches"),
    ),
    "mmseg-heads evaluate runs/modality_branches --ablate-modalities": Run(
        writes=report("runs/modality_branches/report_demo_val"),
        prints=("Modality ablation",),
    ),
    "mmseg-heads report runs/modality_branches mmseg_demo/run": Run(
        prints=("modality_branches", "shapes", "hotspots")
    ),
    # docs/zh/快速上手.md
    "mmseg-heads inspect configs/seed_vgg16_resnet50.yaml --size 512": Run(shown=True),
    "head -n 3 mmseg_demo/run/metrics.jsonl": Run(prints=('"split": "train_batch"', '"fn": ')),
    "tail -n 1 mmseg_demo/run/metrics.jsonl": Run(prints=('"split": "val"', "macro_foreground_f")),
    "mmseg-heads inspect data_specs/demo.yaml": Run(
        prints=("hotspots: 96 labelled; pixels: background", "OK")
    ),
    "mmseg-heads train configs/modality_branches.yaml train.batch_size=4 train.out=runs/bs4": Run(
        "mmseg-heads train configs/modality_branches.yaml train.batch_size=4 train.out=runs/bs4 "
        + TINY,
        writes=run_dir("runs/bs4"),
    ),
    # docs/migrating_from_unet_pytorch.md, on the tiny VOC folder the workspace holds.
    f"mmseg-heads inspect data_specs/voc_style_two_modalities.yaml {VOC}": Run(
        prints=("segmentation 21 classes", "ignore", "OK")
    ),
    f"mmseg-heads inspect configs/unet_pytorch_voc.yaml {VOC} --size 512": Run(shown=True),
    # No network in CI: ImageNet weights cannot be downloaded, so the encoders start from scratch.
    f"mmseg-heads train configs/unet_pytorch_voc.yaml {VOC}": Run(
        f"mmseg-heads train configs/unet_pytorch_voc.yaml {VOC} model.pretrained=none {TINY}",
        writes=run_dir("runs/unet_pytorch_voc"),
    ),
    "mmseg-heads evaluate runs/unet_pytorch_voc": Run(
        writes=report("runs/unet_pytorch_voc/report_voc_style_two_modalities_val")
    ),
    (
        "mmseg-heads predict runs/unet_pytorch_voc "
        "VOCdevkit/VOC2007/JPEGImages/2007_000033.jpg --out predictions"
    ): Run(writes=("predictions/segmentation/2007_000033.png",)),
}

#: Programs besides mmseg-heads that the pages may use; they run as subprocesses.
TOOLS = {"head", "tail"}


def skip_reason(command: str) -> str | None:
    """Why a documented command is not run here (None: it is run)."""
    program = command.split()[0]
    if program == "pip":
        return "pip needs the network and would reinstall the package under test"
    if program == "pytest":
        return "pytest would run the whole suite, this file included, from inside this test"
    return None


# ---------------------------------------------------------------------------------------------
# Reading the pages
# ---------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
#: A config or data spec a page shows in full opens with a comment naming its file.
SHOWN_FILE = re.compile(r"\A# (?P<path>(?:configs|data_specs)/[\w.-]+\.ya?ml):")
#: A YAML block quoting a shipped file says so on its first line: all of it ("copy of") or a part
#: ("excerpt of", Chinese "摘自").
QUOTED_FILE = re.compile(
    r"\A# (?P<kind>copy of|excerpt of|摘自) (?P<path>(?:configs|data_specs)/[\w.-]+\.ya?ml)"
)
COMMENT = re.compile(r"(?:^|\s+)#.*$")  # no documented command has a '#' inside an argument


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int  # of the opening fence, 1-based


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str  # the command line: continuations joined, comment removed
    output: str | None  # the ```text block right after this command's block, if any

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def fenced_blocks(text: str) -> list[Block]:
    return [
        Block(m["lang"], m["body"], text.count("\n", 0, m.start()) + 1)
        for m in FENCE.finditer(text)
    ]


def command_lines(body: str) -> list[tuple[int, str]]:
    """``(line offset, command)`` per command of a bash block: ``\\`` continuations joined,
    comments and blank lines dropped."""
    commands, pending, start = [], "", 0
    for offset, line in enumerate(body.splitlines()):
        if not pending:
            start = offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        text = COMMENT.sub("", pending + line.strip()).strip()
        pending = ""
        if text:
            commands.append((start, text))
    return commands


def documented_commands(doc: str) -> list[Command]:
    blocks = fenced_blocks((REPO / doc).read_text(encoding="utf-8"))
    commands = []
    for i, block in enumerate(blocks):
        if block.lang not in ("bash", "sh", "shell", "console"):
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        output = following.body if following and following.lang == "text" else None
        for offset, text in command_lines(block.body):
            commands.append(Command(doc, block.line + 1 + offset, text, output))
    return commands


def shown_files(doc: str) -> dict[str, str]:
    """``{path: text}`` of the YAML files a page shows in full (first line ``# path: …``)."""
    blocks = fenced_blocks((REPO / doc).read_text(encoding="utf-8"))
    found = {}
    for block in blocks:
        match = SHOWN_FILE.match(block.body)
        if block.lang == "yaml" and match:
            found[match["path"]] = block.body
    return found


def quoted_files(doc: str) -> list[tuple[str, str, str]]:
    """``(kind, path, block text)`` of every YAML block quoting a shipped file."""
    blocks = fenced_blocks((REPO / doc).read_text(encoding="utf-8"))
    matches = [(QUOTED_FILE.match(b.body), b.body) for b in blocks if b.lang == "yaml"]
    return [(m["kind"], m["path"], body) for m, body in matches if m]


def contains(whole, part) -> bool:
    """``part`` is ``whole`` with keys left out (at any depth)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            key in whole and contains(whole[key], value) for key, value in part.items()
        )
    return whole == part


# ---------------------------------------------------------------------------------------------
# The workspace the commands run in
# ---------------------------------------------------------------------------------------------

VOC_TRAIN = ["2007_000032", "2007_000039", "2007_000063", "2007_000068"]
VOC_VAL = ["2007_000033", "2007_000042"]  # 2007_000033: the image the migration guide predicts


def write_voc_tree(root: Path, size: int = 64) -> None:
    """A tiny VOCdevkit/VOC2007 as docs/migrating_from_unet_pytorch.md lays it out: JPEG photos,
    a thermal PNG per photo, palette labels of 21 classes with 255 borders, ImageSets."""
    for folder in ("JPEGImages", "Thermal", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for sample_id in VOC_TRAIN + VOC_VAL:
        photo = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(photo, "RGB").save(root / "JPEGImages" / f"{sample_id}.jpg")
        thermal = rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(thermal, "L").save(root / "Thermal" / f"{sample_id}.png")
        labels = rng.integers(0, 21, (size, size), dtype=np.uint8)
        labels[0, :] = 255  # an object border, as VOC draws them
        image = Image.fromarray(labels, "P")
        image.putpalette([0, 0, 0] * 256)
        image.save(root / "SegmentationClass" / f"{sample_id}.png")
    splits = root / "ImageSets" / "Segmentation"
    (splits / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (splits / "val.txt").write_text("\n".join(VOC_VAL) + "\n")


def write_shown_files(workspace: Path) -> None:
    for doc in DOCS:
        for path, text in shown_files(doc).items():
            # A page showing a shipped file under its name would test the page's copy, not the file.
            assert not (REPO / path).exists(), f"{doc} shows {path}, which the repository ships"
            (workspace / path).write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def execute(command: str, cwd: Path) -> Result:
    """Run one command line in ``cwd`` (the process's working directory)."""
    argv = shlex.split(command)
    if argv[0] == "mmseg-heads":
        # In this process, through the console script's entry point: a fresh interpreter would
        # spend seconds importing torch for every command.
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(argv[1:])
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
        return Result(code, out.getvalue(), err.getvalue())
    assert argv[0] in TOOLS, f"{argv[0]!r}: the docs test does not know how to run it"
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    return Result(done.returncode, done.stdout, done.stderr)


class Workspace:
    """The temporary folder the commands run in; a command documented on several pages (or
    twice) runs once, and later occurrences check its result."""

    def __init__(self, root: Path):
        self.root = root
        self.results: dict[str, Result] = {}

    def run(self, documented: str) -> Result:
        if documented not in self.results:
            command = COMMANDS[documented].command or documented
            self.results[documented] = execute(command, self.root)
        return self.results[documented]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs_commands")
    for folder in ("configs", "data_specs"):
        shutil.copytree(REPO / folder, root / folder)
    write_shown_files(root)
    write_voc_tree(root / "VOCdevkit" / "VOC2007")
    threads = torch.get_num_threads()
    # One thread: the commands work on 64×64 images, and on a busy 2-core machine two OpenMP
    # threads waiting on each other made a 3-second training take over a minute.
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # relative paths in the docs resolve here, never in the repository
        patch.setenv("HF_HUB_OFFLINE", "1")
        try:
            yield Workspace(root)
        finally:
            torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_command_lines_join_continuations_and_drop_comments():
    body = (
        "# set up\n"
        "mmseg-heads train a.yaml \\\n"
        "    train.lr=3e-4   # tuned\n"
        "\n"
        'pip install -e ".[dev]"\n'
        "mmseg-heads report runs/a runs/b          # compare\n"
    )
    assert command_lines(body) == [
        (1, "mmseg-heads train a.yaml train.lr=3e-4"),
        (4, 'pip install -e ".[dev]"'),
        (5, "mmseg-heads report runs/a runs/b"),
    ]


def test_readme_starts_with_install_then_tests():
    first = [c.text for c in documented_commands("README.md")[:2]]
    assert first == ['pip install -e ".[dev]"', "pytest"]


def test_every_documented_command_has_an_entry():
    missing = [
        f"{c.where}: {c.text}"
        for doc in DOCS
        for c in documented_commands(doc)
        if skip_reason(c.text) is None and c.text not in COMMANDS
    ]
    assert not missing, (
        "commands in the docs that tests/test_docs_commands.py does not run; add each to "
        "COMMANDS (how to make it small, what it writes):\n" + "\n".join(missing)
    )


def test_every_entry_is_still_documented():
    documented = {c.text for doc in DOCS for c in documented_commands(doc)}
    stale = sorted(set(COMMANDS) - documented)
    assert not stale, f"COMMANDS entries no page shows any more: {stale}"


def test_pages_show_the_files_their_commands_read():
    shown = {path for doc in DOCS for path in shown_files(doc)}
    assert {
        "configs/my_fused.yaml",
        "data_specs/my_data.yaml",
        "configs/unet_pytorch_voc.yaml",
    } <= shown


@pytest.mark.parametrize("doc", DOCS)
def test_quoted_files_match_the_shipped_files(doc):
    """A page quoting a config or data spec shows what the file holds (comments aside)."""
    quoted = quoted_files(doc)
    for kind, path, text in quoted:
        shown, shipped = yaml.safe_load(text), yaml.safe_load((REPO / path).read_text())
        if kind == "copy of":
            assert shown == shipped, f"{doc}: its copy of {path} differs from the file"
        else:
            assert contains(shipped, shown), f"{doc}: its excerpt of {path} is not in the file"
    assert doc == "README.md" or quoted, f"{doc}: expected the quoted files to be marked"


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_run(doc, workspace):
    ran = 0
    for command in documented_commands(doc):
        if skip_reason(command.text) is not None:
            continue
        expected = COMMANDS[command.text]
        result = workspace.run(command.text)
        context = f"{command.where}: `{command.text}`"
        assert result.code == 0, f"{context} exited {result.code}:\n{result.err[-3000:]}"
        for path in expected.writes:
            assert (workspace.root / path).is_file(), f"{context} did not write {path}"
        for text in expected.prints:
            assert text in result.out, f"{context} did not print {text!r}:\n{result.out[-3000:]}"
        if expected.shown:
            check_shown_output(command, result.out)
        ran += 1
    assert ran >= 3, f"{doc}: expected at least 3 runnable commands, found {ran}"


def check_shown_output(command: Command, printed: str) -> None:
    """Every line of the output a page shows is a line the command printed (the page may leave
    lines out, never change one)."""
    assert command.output, f"{command.where}: expected a ```text block with the output after it"
    real = {line.rstrip() for line in printed.splitlines()}
    for line in command.output.splitlines():
        if line.strip():
            assert line.rstrip() in real, (
                f"{command.where}: the page shows {line!r}, which `{command.text}` no longer "
                f"prints; its output:\n{printed}"
            )
