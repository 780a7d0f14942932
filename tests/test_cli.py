"""The command line: every error path, atomic outputs, and the main job end to end."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib import image as mpimg

from pathlock import cli, datasets
from pathlock.interventions import load_timings

SPEC = str(datasets.model_path("decoupling"))
DEMO = str(datasets.path("decoupling_demo"))
TINY = ["--draws", "60", "--tune", "60", "--chains", "2", "--quiet"]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny `pathlock run` shared by the tests that need a result."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = cli.main(["run", "--out", str(out), *TINY, "--timing-draws", "20", "--horizon", "5"])
    assert code == 0
    return out


def test_help_on_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    for sub in ("run", "fit", "simulate", "timings", "report", "summary", "datasets"):
        code, out, _ = run([sub, "--help"], capsys)
        assert code == 0
        assert "usage: pathlock" in out


def test_console_script_exit_code_for_bad_input(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "pathlock"
    proc = subprocess.run(
        [
            str(exe),
            "fit",
            str(tmp_path / "nope.toml"),
            "--data",
            DEMO,
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope.toml does not exist" in lines[0]


def test_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["fit", SPEC, "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert "missing.csv does not exist" in err


def test_unreadable_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\xff\xfe garbage \x00\n\x01\x02")
    code, _, err = run(["fit", SPEC, "--data", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert err.startswith("pathlock: error:")
    assert not (tmp_path / "o").exists()


def test_unknown_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["fit", SPEC, "--data", DEMO, "--time", "week", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert "week" in err


def test_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('schema_version = 1\nfamily = "decoupling"\nbogus_key = 3\n')
    code, _, err = run(["fit", str(spec), "--data", DEMO, "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert "bogus_key" in err
    spec.write_text("this is = = not toml")
    code, _, err = run(["fit", str(spec), "--data", DEMO, "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert "not valid TOML" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["fit", SPEC], capsys)
    assert code == 2
    assert "--data" in err


def test_existing_output_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("previous result")
    code, _, err = run(["fit", SPEC, "--data", DEMO, "--out", str(out)], capsys)
    assert code == 2
    assert "--force" in err
    assert (out / "keep.txt").read_text() == "previous result"


def test_interrupted_run_leaves_previous_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("previous result")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["pathlock.fit"], "fit", interrupted)
    code, _, err = run(["fit", SPEC, "--data", DEMO, "--out", str(out), "--force"], capsys)
    assert code == 1
    assert "interrupted" in err
    assert (out / "keep.txt").read_text() == "previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no temporary left behind


def test_simulate_writes_data_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.csv"
    code, _, _ = run(
        ["simulate", SPEC, "--out", str(out), "--steps", "30", "--seed", "3", "--quiet"], capsys
    )
    assert code == 0
    assert out.exists() and (tmp_path / "sim_truth.csv").exists()
    assert (tmp_path / "sim_truth.json").exists()
    code, _, err = run(["simulate", SPEC, "--out", str(out), "--steps", "30"], capsys)
    assert code == 2 and "--force" in err
    code, _, err = run(["simulate", SPEC, "--out", str(out), "--steps", "3", "--force"], capsys)
    assert code == 2 and "--steps" in err


def test_datasets_lists_registry(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["datasets"], capsys)
    assert code == 0
    for name in ("decoupling_demo", "hamilton_gnp", "fedfunds"):
        assert name in out


def test_synthetic_datasets_are_what_their_recorded_command_makes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registry's command, rerun from the repository root, rewrites the bundled files:
    # the data and the ground truth say what made them.  Labels and integers must match
    # exactly, floats to 1e-12: library builds differ in the last bits of float results
    # (numpy 2.5.5 moved the demo's values by up to 2e-16), while another seed, parameter or
    # model moves them by 1e-3 or more.
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    synthetic = [d for d in datasets.registry().values() if d.command]
    assert synthetic
    for info in synthetic:
        args = info.command.split()
        assert args[0] == "pathlock"
        out = tmp_path / Path(info.file).name
        args[args.index("--out") + 1] = str(out)
        code, _, err = run([*args[1:], "--quiet"], capsys)
        assert code == 0, err
        truth = out.with_name(f"{out.stem}_truth.csv")
        for made, bundled in (
            (out, datasets.path(info.name)),
            (truth, datasets.data_dir() / info.truth),
        ):
            pd.testing.assert_frame_equal(
                pd.read_csv(made), pd.read_csv(bundled), check_exact=False, rtol=1e-12, atol=1e-12
            )


def test_result_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["summary", str(tmp_path)], capsys)
    assert code == 2 and "fit.nc" in err
    code, _, err = run(["report", str(tmp_path / "nowhere")], capsys)
    assert code == 2


@pytest.mark.slow
def test_run_produces_report(result_dir: Path) -> None:
    for name in ("fit.nc", "spec.toml", "summary.csv", "timings.nc", "manifest.json"):
        assert (result_dir / name).exists(), name
    html = (result_dir / "report" / "report.html").read_text()
    pngs = sorted((result_dir / "report").glob("*.png"))
    assert len(pngs) >= 6
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png.name
        assert mpimg.imread(png).ndim == 3
        assert base64.b64encode(data).decode()[:200] in html, f"{png.name} not embedded"
    # run judges the timings against a goal (by default half the harm without acting).
    assert "point of no return" in html or "probably below" in html


@pytest.mark.slow
def test_summary_timings_and_report_on_result(
    result_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["summary", str(result_dir)], capsys)
    assert code == 0 and "feedback_w" in out
    timings = [
        "timings",
        str(result_dir),
        "--intervention",
        "lower_hazard:0.5",
        "--at",
        "2023-03-06,2023-06-05",
        "--policy",
        "posterior:0.8",
        "--horizon",
        "5",
        "--draws",
        "10",
        "--target",
        "12",
        "--quiet",
    ]
    code, out, err = run(timings, capsys)
    assert code == 2 and "--force" in err  # the run already wrote timings.nc
    code, out, err = run([*timings, "--force"], capsys)
    assert code == 0, err
    assert "at 2023-03-06" in out and "point of no return" in out
    saved = load_timings(result_dir / "timings.nc")
    names = [s.name for s in saved.scenarios]
    assert names[0] == "never"  # the baseline is always part of a comparison
    assert names[1:3] == ["at 2023-03-06", "at 2023-06-05"]
    code, _, err = run(
        ["timings", str(result_dir), "--intervention", "squash:1", "--at", "3", "--force"], capsys
    )
    assert code == 2 and "unknown kind" in err
    code, _, err = run(
        [
            "timings",
            str(result_dir),
            "--intervention",
            "lower_hazard:0.5",
            "--policy",
            "feedback:nosuch:1.0",
            "--force",
        ],
        capsys,
    )
    assert code == 2 and "nosuch" in err
    code, out, _ = run(["report", str(result_dir), "--force", "--quiet"], capsys)
    assert code == 0 and out.strip().endswith("report.html")


def test_backend_option_reaches_fit(capsys: pytest.CaptureFixture[str]) -> None:
    """``--backend`` is passed to ``fit`` as given and left out when not given
    (the model file's ``[sampler] backend`` then decides); other values are usage
    errors."""
    parser = cli.build_parser()
    for sub in (["run"], ["fit", SPEC, "--data", DEMO, "--out", "x"]):
        chosen = parser.parse_args([*sub, "--backend", "jax"])
        assert cli._sampler_kwargs(chosen)["backend"] == "jax"
        assert "backend" not in cli._sampler_kwargs(parser.parse_args(sub))
    code, _, err = run(["run", "--backend", "xla"], capsys)
    assert code == 2 and "invalid choice: 'xla'" in err
