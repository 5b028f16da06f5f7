"""``make readme-examples`` (tests/readme_examples.py) covers every command line of README.md: each is found,
and either run (its placeholders filled, from fixtures it makes) or skipped with a reason, so a new README
example cannot slip through unrun. Running them takes ~10 minutes: that is ``make readme-examples``, not this."""

from __future__ import annotations

import re

import pytest

from tests import readme_examples as examples

TEXT = examples.README.read_text()
#: What an unfilled placeholder looks like: ``<run>``, ``<date>_<time>``, ``predictions=...``, a trailing ``...``.
UNFILLED = re.compile(r"<[a-z_]+>|=\.\.\.|(^|\s)\.\.\.(\s|$)")


def fenced_lines(text: str) -> list[tuple[int, str, str]]:
    """``(line number, fence language, line)`` of every line inside a fenced code block."""
    out, language = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            language = None if language is not None else line.lstrip()[3:].strip().lower()
        elif language is not None:
            out.append((number, language, line))
    return out


def test_every_command_line_of_the_readme_is_found() -> None:
    commands = examples.extract(TEXT)
    found = {c.line for c in commands}
    starts, continued = [], False
    for number, language, line in fenced_lines(TEXT):
        if language == "python":
            continue
        stripped = line.strip()
        if not continued and stripped and not stripped.startswith("#"):
            starts.append((number, language, stripped))
        continued = stripped.endswith("\\")
    missed = [(n, lang, s) for n, lang, s in starts if n not in found]
    assert not missed, f"commands outside ```bash blocks (label them bash) or not extracted: {missed}"
    assert len(commands) == len(starts) > 40
    assert all(c.text and not c.text.endswith("\\") and "  #" not in c.text for c in commands)


@pytest.mark.parametrize(("real_data", "gpus"), [(True, 0), (False, 0), (True, 8)])
def test_every_command_is_run_or_skipped_with_a_reason(real_data: bool, gpus: int) -> None:
    steps = examples.plan(examples.extract(TEXT), real_data, gpus)
    for step in steps:
        where = f"README.md:{step.command.line}: {step.command.text}"
        assert step.action in ("run", "skip"), where
        if step.action == "skip":
            assert step.reason and not step.reason.startswith("UNKNOWN"), f"{where}: {step.reason}"
            continue
        assert not UNFILLED.search(step.shell), f"{where}: a placeholder left in {step.shell!r}"
        assert set(step.fixtures) <= set(examples.FIXTURES), where
        app = examples.APP.match(step.shell)
        assert app or examples.RUN_MAKE.match(step.shell), where
        if app:
            assert step.shell.endswith(" ".join(step.appended)), where
    ran = [s for s in steps if s.action == "run"]
    assert len(ran) > len(steps) // 2  # most examples run; the skips are the GPU, SLURM and hour-long ones
    if gpus == 0:
        assert all("trainer=gpu" not in s.shell for s in ran)


def test_placeholders_overrides_and_skips() -> None:
    def step(text: str, real_data: bool = True, gpus: int = 0):
        return examples.plan_one(examples.Command(1, text), real_data, gpus)

    eval_ = step("lenscnn-eval ckpt_path=<ckpt> mc_samples=20")
    assert eval_.shell == f"lenscnn-eval ckpt_path={examples.CHECKPOINT} mc_samples=20 test_size=64 val_size=64"
    assert eval_.fixtures == ("model",)
    refine = step("lenscnn-refine input=cutouts/ predictions=... fit.mcmc_run=200")
    assert "predictions=outputs/predict/mine" in refine.shell and refine.shell.endswith("fit.mcmc_run=2")
    assert step("lenscnn-refine merge=outputs/refine/multiruns/<date>_<time>").fixtures == ("shards",)
    assert step(".venv/bin/lenscnn-simulate n=1000").shell == ".venv/bin/lenscnn-simulate n=1000 n=16"
    assert step("make train").action == "skip"
    assert step("make install").cwd == "repo"
    assert step("lenscnn-train trainer=gpu trainer.devices=2", gpus=1).action == "skip"
    assert step("lenscnn-train trainer=gpu trainer.devices=2", gpus=2).action == "run"
    assert step("lenscnn-eval catalog=slacs_hst", real_data=False).action == "skip"
    assert step("lenscnn-frobnicate x=1").reason.startswith("UNKNOWN")
    assert step("make frobnicate").reason.startswith("UNKNOWN")


def test_commands_lose_their_comments_but_not_quoted_hashes() -> None:
    text = "```bash\nlenscnn-predict input='a #1.fits'   # a comment\nlenscnn-train -m x=1,2 \\\n    y=3  # z\n```\n"
    commands = examples.extract(text)
    assert [(c.line, c.text) for c in commands] == [
        (2, "lenscnn-predict input='a #1.fits'"),
        (3, "lenscnn-train -m x=1,2 y=3"),
    ]
