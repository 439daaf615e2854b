"""A team's snippets: their own search path before the repository's, the repository always
reachable, one problem for one missing file, and the run keeping the texts it read."""

import json
import os

import pytest

from launchers.train import BUILDS
from lib import config
from tests.conftest import REPO, run_launcher


@pytest.fixture
def team(tmp_path):
    (tmp_path / "snips").mkdir()
    (tmp_path / "snips" / "fast.gin").write_text("include 'gin/reward.gin'\n"
                                                  "Trainer.num_steps = 20\n")
    return tmp_path


def test_a_team_folder_goes_first_and_the_repository_stays_reachable(team, monkeypatch):
    for flags, env in (([str(team)], ""), ([], str(team))):
        monkeypatch.setenv(config.SEARCH_PATH_ENV, env)
        roots = config.search_path(flags)
        assert roots == [team.resolve(), REPO]
        config.set_search_roots(roots)
        cfg = config.load(["snips/fast.gin"], [], builds=BUILDS)
        assert "Trainer.num_steps = 20  # snips/fast.gin:2; overrides gin/reward.gin:" in \
            cfg.effective_text()
    config.set_search_roots([REPO])


def test_problems_that_follow_from_a_missing_include_are_not_listed_one_by_one(team):
    (team / "snips" / "broken.gin").write_text("include 'gin/nope.gin'\n"
                                                "Trainer.num_steps = 20\n")
    config.set_search_roots(config.search_path([str(team)]))
    try:
        with pytest.raises(config.ConfigError) as e:
            config.load(["snips/broken.gin"], [], builds=BUILDS)
    finally:
        config.set_search_roots([REPO])
    problems = e.value.problems
    assert len(problems) == 2
    assert "include 'gin/nope.gin' not found" in problems[0].message
    assert "more problem(s), such as unset required values, may follow from the file(s) not " \
        "read above" in problems[1].message


@pytest.mark.slow
def test_the_run_keeps_each_snippet_it_read_and_diff_names_a_changed_one(team, tmp_path):
    def launch(workdir):
        proc = run_launcher([f"--gin_search_path={team}", "--gin_file=snips/fast.gin",
                             "--gin_file=gin/debug/smoke.gin",
                             "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={workdir}"])
        assert proc.returncode == 0, proc.stderr[-3000:]

    launch(tmp_path / "a")
    original = (team / "snips" / "fast.gin").read_text()
    (team / "snips" / "fast.gin").write_text(original + "Trainer.seed = 1\n")
    launch(tmp_path / "b")
    (manifest,) = json.loads((tmp_path / "a" / "gin_files.json").read_text())
    entry = {e["file"]: e for e in manifest["files"]}["snips/fast.gin"]
    assert entry["root"] == str(team.resolve())
    assert (tmp_path / "a" / entry["copy"]).read_text() == original
    assert set(e["file"] for e in manifest["files"]) >= {"gin/reward.gin", "gin/base/trainer.gin"}
    from launchers.diff import diff_text

    text = diff_text(tmp_path / "a", tmp_path / "b")
    assert "snippet snips/fast.gin: content differs" in text
    assert "gin/reward.gin" not in text.split("snippet", 1)[1]
    assert os.path.exists(tmp_path / "b" / "gin_files")
