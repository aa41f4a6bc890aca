"""The README and docs/ pages stay true: every `albench` and `python -m bench.*` command they show names a real
subcommand or module and real flags, the commands that need no GPU and no download run, their links resolve,
and the README stays a front page (under 12 KB)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from orchestrator.cli import build_parser
from tests.orchestrator.test_cli import albench_here

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:\.venv/bin/)?(?:albench [a-z]|python -m bench\.\w+)")


def _code_blocks(text: str) -> list[str]:
    """Shell lines of fenced blocks (continuations joined) and inline code spans."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + line.strip()
            else:
                lines.append(line.strip())
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return lines + spans


def shown_commands() -> list[tuple[str, str]]:
    """(page, command) for every albench or bench command the pages show."""
    found = []
    for page in PAGES:
        for code in _code_blocks(page.read_text()):
            code = re.sub(r"`#[^`]*`", "", code).split(" # ")[0].strip()  # shell comments, inline and trailing
            if COMMAND.match(code) and not code.rstrip(")").endswith("..."):
                found.append((page.name, code))
    return found


def _tokens(command: str) -> list[str]:
    words = shlex.split(command.replace("[", " ").replace("]", " "))
    return [w for w in words if w not in ("...", "|")]


def _subparsers() -> dict[str, set[str]]:
    action = next(a for a in build_parser()._actions if a.dest == "command")
    return {name: {s for a in sub._actions for s in a.option_strings} for name, sub in action.choices.items()}


def test_the_pages_show_commands_and_the_readme_is_a_front_page():
    assert len(shown_commands()) >= 20
    assert (REPO / "README.md").stat().st_size < 12 * 1024


@pytest.mark.parametrize(("page", "command"), shown_commands())
def test_every_shown_command_names_a_real_subcommand_or_bench_and_real_flags(page, command):
    words = _tokens(command)
    if words[0].endswith("albench"):
        subcommands = _subparsers()
        assert words[1] in subcommands, f"{page}: `{command}`: no subcommand {words[1]!r}"
        options, allowed = words[2:], subcommands[words[1]]
    else:
        module = words[2]
        source = REPO / Path(*module.split(".")).with_suffix(".py")
        assert source.exists(), f"{page}: `{command}`: no module {module}"
        allowed = set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", source.read_text()))
        options = words[3:]
    unknown = [w.split("=")[0] for w in options if w.startswith("--") and w.split("=")[0] not in allowed]
    assert not unknown, f"{page}: `{command}`: no such flags {unknown}"


def test_the_commands_that_need_no_gpu_and_no_download_run():
    """`albench list` and `albench plan` of the grids in this repository, as the pages show them."""
    ran = 0
    for page, command in shown_commands():
        words = _tokens(command)
        if not words[0].endswith("albench") or words[1] not in ("list", "plan"):
            continue
        if words[1] == "plan" and (len(words) < 3 or not (REPO / words[2]).is_file()):
            continue  # named in prose, or a placeholder (GRID)
        result = albench_here(*[REPO / w if w.endswith(".yaml") else w for w in words[1:]])
        assert result.returncode == 0, f"{page}: `{command}`: {result.stderr}"
        ran += 1
    assert ran >= 2


def test_links_between_the_pages_and_to_images_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_make_targets_shown_exist():
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


def test_the_plugin_pages_strategy_scores_by_its_contract_and_its_entry_points_are_the_examples(digits):
    """The strategy `docs/plugins.md` shows runs as shown (a real backbone on real digits, its scores checked by
    the engine's contract check), and its entry-point block is the example package's own."""
    import numpy as np
    import torch

    from models.augment import Normalizer
    from models.small_cnn import SmallCNN
    from orchestrator.engine.query import checked
    from strategies.base import ScoringInputs

    page = (REPO / "docs" / "plugins.md").read_text()
    namespace: dict = {}
    exec(re.search(r"```python\n(.*?)```", page, re.S).group(1), namespace)
    strategy = namespace["VariationRatio"](namespace["RatioSettings"](temperature=2.0))
    torch.manual_seed(0)
    backbone, normalize = SmallCNN(10, 1).eval(), Normalizer(digits.mean, digits.std)
    inputs = ScoringInputs(backbone, digits.train_images[:70], np.arange(70), normalize, 32, selection_key=0)
    scores = checked(strategy, inputs, strategy.score(inputs)).scores
    with torch.no_grad():
        expected = 1 - torch.softmax(backbone(normalize(digits.train_images[:70])).logits / 2.0, 1).amax(1)
    np.testing.assert_allclose(scores, expected.double().numpy(), rtol=1e-6)

    toml = re.search(r"```toml\n(.*?)```", page, re.S).group(1).strip()
    assert toml in (REPO / "examples" / "albench-bald" / "pyproject.toml").read_text()
