"""Hyper-parameter sweeps: the draw, the config check, the selection and the budget curve
(glann.methods.search_space, glann.evaluation.sweeps); the quick run's tiny sweep (K = 2 for GLANN
and NS-GAN) is checked in tests/test_pipeline.py."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from glann.evaluation import sweeps as summary
from glann.methods import search_space as sweep
from glann.methods.registry import METHODS
from glann.pipeline.config import config_errors, load_schema
from glann.evaluation.context import Reference as Ref, Scoring as How

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")


def test_every_default_space_names_real_config_keys():
    for method in sweep.SPACES:
        assert method in METHODS
        assert sweep.space_errors(method, sweep.SPACES[method], SCHEMA["properties"]) == [], method
    assert {m for m in METHODS if sweep.sweepable(m)} == set(METHODS)  # glo_gauss through GLANN's settings


def test_lucic_wide_ranges_for_the_gans():
    """compare_gan v1 src/params.py, GetDefaultWideRange and the per-model wide ranges."""
    for gan in ("mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began"):
        space = sweep.SPACES[gan]
        assert space[f"{gan}.lr"] == {"log10": [-5.0, -2.0]}
        assert space[f"{gan}.beta1"] == {"uniform": [0.0, 1.0]}
        assert space[f"{gan}.critic_steps"] == {"choice": [1, 5]}
        assert (f"{gan}.d_batchnorm" in space) == (gan != "wgan_gp")
    assert sweep.SPACES["wgan"]["wgan.clip"] == {"log10": [-3.0, 0.0]}
    assert sweep.SPACES["wgan_gp"]["wgan_gp.gp_lambda"] == sweep.SPACES["dragan"]["dragan.gp_lambda"] == {
        "log10": [-1.0, 2.0]}
    assert sweep.SPACES["began"]["began.lambda_k"] == {"log10": [-4.0, -2.0]}
    assert sweep.SPACES["began"]["began.gamma"] == {"uniform": [0.0, 1.0]}


def test_draws_are_deterministic_prefix_stable_and_inside_their_ranges():
    for method, space in sweep.SPACES.items():
        many = sweep.settings(method, 16, seed=3)
        assert many[:8] == sweep.settings(method, 8, seed=3), method  # K 8 -> 16 keeps the first 8
        assert many == sweep.settings(method, 16, seed=3)
        assert many != sweep.settings(method, 16, seed=4)
        assert len({json.dumps(s, sort_keys=True) for s in many}) == 16
        for s in many + sweep.settings(method, 200, seed=0):
            assert set(s) == set(space)
            for key, value in s.items():
                (kind, args), = space[key].items()
                if kind == "choice":
                    assert value in args and type(value) is type(args[0])
                elif kind == "log10":
                    assert 10 ** args[0] * 0.999 <= value <= 10 ** args[1] * 1.001
                else:
                    assert args[0] <= value < args[1]
    # each method its own stream: two GANs with the same space get different settings
    assert [list(s.values()) for s in sweep.settings("nsgan", 4, 0)] != [
        list(s.values()) for s in sweep.settings("lsgan", 4, 0)]
    # the draws cover their ranges: both choices, both ends of a log range
    draws = sweep.settings("nsgan", 200, seed=0)
    assert {d["nsgan.critic_steps"] for d in draws} == {1, 5}
    lrs = [math.log10(d["nsgan.lr"]) for d in draws]
    assert min(lrs) < -4.7 and max(lrs) > -2.3 and abs(np.mean(lrs) + 3.5) < 0.25


def test_glo_gauss_shares_glanns_settings_and_apply_sets_each_section():
    assert sweep.settings("glo_gauss", 4, 0) == sweep.settings("glann", 4, 0)
    s = sweep.draw("glann", 0, 0)
    glo = sweep.apply({"lr_generator": 1.0, "lr_codes": 1.0, "epochs": 5}, "glo", s)
    assert glo == {"lr_generator": s["glo.lr_generator"], "lr_codes": s["glo.lr_codes"], "epochs": 5}
    imle = sweep.apply({"lr": 1.0, "samples_factor": 2.0, "betas": [0.5, 0.999]}, "imle", s)
    assert imle["lr"] == s["imle.lr"] and imle["samples_factor"] == s["imle.samples_factor"]
    g = sweep.apply({"lr": 1.0, "betas": [0.5, 0.999], "critic_steps": 1}, "wgan",
                    {"wgan.beta1": 0.25, "wgan.critic_steps": 5, "nsgan.lr": 9.0})
    assert g == {"lr": 1.0, "betas": [0.25, 0.999], "critic_steps": 5}
    # beta1 or beta2 replaces one entry of the section's betas and keeps the other
    assert sweep.apply({"betas": [0.0, 0.9]}, "vae", {"vae.beta1": 0.5}) == {"betas": [0.5, 0.9]}
    assert sweep.apply({"betas": [0.0, 0.9]}, "vae", {"vae.beta2": 0.99}) == {"betas": [0.0, 0.99]}


def _cfg(**over):
    cfg = {"datasets": ["digits"], "methods": ["glann", "nsgan"], "seeds": [0],
           "data": {"digits": {"size": 16, "val_size": 0.1}}, "sweep": {"settings": 2}}
    cfg.update(over)
    return cfg


def test_config_check_names_every_sweep_mistake():
    assert config_errors(_cfg(), SCHEMA) == []
    assert config_errors(_cfg(sweep={"settings": 2, "methods": ["glann"]}), SCHEMA) == []
    errs = config_errors(_cfg(data={"digits": {"size": 16}}), SCHEMA)
    assert len(errs) == 1 and "config error at data.digits.val_size" in errs[0] and "sweep.settings" in errs[0]
    assert config_errors(_cfg(data={"digits": {"size": 16}}, sweep={"settings": 0}), SCHEMA) == []
    errs = config_errors(_cfg(sweep={"settings": 2, "methods": ["gan"]}), SCHEMA)
    assert errs and "config error at sweep.methods[0]: 'gan' is not a method" in errs[0]
    # a swept method left out of methods (--config methods=[...] on a preset) is not run
    assert config_errors(_cfg(methods=["glann"], sweep={"settings": 2, "methods": ["glann", "nsgan"]}), SCHEMA) == []
    errs = config_errors(_cfg(sweep={"settings": 2, "space": {"nsgan": {"glo.lr": {"log10": [-4, -2]}}}}), SCHEMA)
    assert errs and "sweep.space.nsgan.glo.lr" in errs[0] and "read only nsgan" in errs[0]
    errs = config_errors(_cfg(sweep={"settings": 2, "space": {"nsgan": {"nsgan.learning_rate": {"log10": [-4, -2]}}}}),
                 SCHEMA)
    assert errs and "nsgan has no key 'learning_rate'" in errs[0]
    errs = config_errors(_cfg(sweep={"settings": 2, "space": {"nsgan": {"nsgan.lr": {"log10": [-2, -4]}}}}), SCHEMA)
    assert errs and "give one distribution" in errs[0]
    errs = config_errors(_cfg(sweep={"settings": -1}), SCHEMA)
    assert errs and "sweep.settings" in errs[0]


def test_a_grid_visits_its_values_in_order_and_leaves_the_other_draws_alone():
    """{grid: [...]}: setting k takes value k (modulo their number), draws nothing, so the other keys'
    values are those of the same space without the grid; the config check accepts it (and no empty one)."""
    base = {"flow": {"flow.width": {"choice": [16, 32, 64]}}}
    grid = {"flow": {**base["flow"], "flow.lr": {"grid": [0.0005, 0.001]}}}
    assert config_errors(_cfg(methods=["flow"], sweep={"settings": 2, "space": grid}), SCHEMA) == []
    with_grid, without = sweep.settings("flow", 3, 0, grid), sweep.settings("flow", 3, 0, base)
    assert [s["flow.lr"] for s in with_grid] == [0.0005, 0.001, 0.0005]
    assert [s["flow.width"] for s in with_grid] == [s["flow.width"] for s in without]
    errs = config_errors(_cfg(methods=["flow"], sweep={"settings": 2, "space": {"flow": {"flow.lr": {"grid": []}}}}),
                         SCHEMA)
    assert errs and "give one distribution" in errs[0] and "grid" in errs[0]


def test_a_space_in_the_config_replaces_the_default():
    space = {"nsgan": {"nsgan.lr": {"choice": [0.001, 0.002]}}}
    assert config_errors(_cfg(sweep={"settings": 3, "space": space}), SCHEMA) == []
    drawn = sweep.settings("nsgan", 3, 0, space)
    assert all(set(s) == {"nsgan.lr"} and s["nsgan.lr"] in (0.001, 0.002) for s in drawn)


def test_study_and_quick_presets_sweep():
    quick = yaml.safe_load((REPO / "config/quick.yaml").read_text())
    assert quick["sweep"]["settings"] == 2 and quick["sweep"]["methods"] == ["glann", "nsgan"]
    study = yaml.safe_load((REPO / "config/study/digits_sweep.yaml").read_text())
    assert config_errors(study, SCHEMA) == [] and study["sweep"]["settings"] >= 8
    assert "glann" in study["methods"] and sum(m in study["methods"] for m in sweep.SPACES) >= 5


def _rows(spec):
    """spec: {k: (val, test, precision, recall, classes, diverged)} for one method, one seed."""
    return [{"dataset": "d", "method": "m", "k": k, "seed": 0, "val_fid_domain": v, "fid_domain": t,
             "precision": p, "recall": r, "density": None, "coverage": None, "classes_covered": c,
             "diverged": dv} for k, (v, t, p, r, c, dv) in spec.items()]


def test_the_best_setting_is_picked_on_validation_and_reported_on_test():
    rows = _rows({0: (5.0, 1.0, 0.1, 0.1, 10, False),    # best on test, not on validation
                  1: (2.0, 3.0, 0.9, 0.8, 10, False),    # best on validation
                  2: (float("nan"), 0.5, 0.5, 0.5, 3, True),  # diverged: NaN never wins
                  3: (4.0, 9.0, 0.2, 0.2, 8, False)})
    rows.append({**rows[1], "seed": 1, "fid_domain": 5.0, "val_fid_domain": 2.2})
    r = summary.analyse(rows, {})["d/m"]
    assert r["best_k"] == 1 and r["best_val_fid_domain"] == pytest.approx(2.1)
    assert r["best"]["fid_domain"]["mean"] == pytest.approx(4.0)
    assert r["best"]["fid_domain"]["std"] == pytest.approx(np.std([3.0, 5.0], ddof=1))
    assert r["seeds"] == [0, 1]
    assert r["diverged_share"] == pytest.approx(1 / 5) and r["few_classes_share"] == pytest.approx(2 / 5)
    tests = [1.0, 4.0, 0.5, 9.0]  # per-setting mean test fid
    assert r["fid_domain_over_settings"]["median"] == pytest.approx(np.median(tests))


def test_undominated_share_counts_runs_no_other_method_beats_in_precision_and_recall():
    def run(method, p, r):
        return {"dataset": "d", "method": method, "precision": p, "recall": r}

    rows = [run("glann", 0.9, 0.9), run("glann", 0.5, 0.5), run("glann", 0.8, 0.95), run("glann", None, 0.2),
            run("nsgan", 0.95, 0.6), run("nsgan", 0.6, 0.6), run("vae", 0.9, 0.9)]
    # (0.9, 0.9): the VAE's equal point does not beat it; (0.5, 0.5): beaten; (0.8, 0.95): nobody
    assert summary.undominated_share(rows, "d", "glann") == pytest.approx(2 / 3)
    assert summary.undominated_share(rows, "d", "nsgan") == pytest.approx(1 / 2)  # (0.6, 0.6) beaten
    assert summary.undominated_share(rows, "d", "vae") == 1.0
    assert summary.undominated_share(rows, "other", "glann") is None


def test_budget_curve_matches_exact_enumeration():
    vals, tests = [3.0, 1.0, 4.0, 1.5, 9.0], [30.0, 12.0, 7.0, 20.0, 2.0]
    settings = {k: {"val": v, "test": t} for k, (v, t) in enumerate(zip(vals, tests))}
    curve = summary.budget_curve(settings, seed=0, draws=4000)
    for point in curve:
        n = point["n"]
        picks = [tests[min(c, key=lambda k: vals[k])] for c in itertools.combinations(range(5), n)]
        assert point["mean"] == pytest.approx(np.mean(picks), rel=0.05), n
        assert point["p5"] >= min(picks) and point["p95"] <= max(picks)
    assert curve[0]["mean"] == pytest.approx(np.mean(tests), rel=0.05)
    assert curve[-1] == {"n": 5, "mean": 12.0, "p5": 12.0, "p95": 12.0}  # all 5: the validation pick


def test_the_budget_table_gives_each_methods_curve_and_bolds_the_lowest_at_each_n():
    """sweep.md's "Quality against search budget": budget_curve's numbers per method and n, the
    lowest mean at each n in bold, no entry past a method's own K."""
    a = {k: {"val": v, "test": t} for k, (v, t) in enumerate(zip([3.0, 1.0, 2.0], [30.0, 12.0, 50.0]))}
    b = {k: {"val": v, "test": t} for k, (v, t) in enumerate(zip([1.0, 2.0], [20.0, 30.0]))}
    result = {"d/glann": {"dataset": "d", "method": "glann", "budget": summary.budget_curve(a)},
              "d/vae": {"dataset": "d", "method": "vae", "budget": summary.budget_curve(b)}}
    lines = summary.render_budget(result)
    assert "## Quality against search budget" in lines
    header = next(line for line in lines if line.startswith("| method |"))
    assert header == "| method | n = 1 | n = 2 | n = 3 |"
    glann = next(line for line in lines if line.startswith("| glann |")).split(" | ")
    vae = next(line for line in lines if line.startswith("| vae |")).split(" | ")

    def cell(curve, n):
        point = curve[n - 1]
        return f"{summary._fmt(point['mean'])} [{summary._fmt(point['p5'])}-{summary._fmt(point['p95'])}]"

    # n = 1: the mean over the settings, about 30.7 against 25; n = 2: glann's pairs pick 12, 50 and
    # 12 (about 24.7 on average) against vae's validation pick, 20; n = 3: glann's pick (12), and vae
    # has 2 settings only
    assert vae[1] == "**" + cell(result["d/vae"]["budget"], 1).replace(" [", "** [")
    assert glann[1] == cell(result["d/glann"]["budget"], 1)
    assert glann[2] == cell(result["d/glann"]["budget"], 2) and vae[2] == "**20** [20-20]"
    assert glann[3] == "**12** [12-12] |" and vae[3] == " |"  # the last cell keeps the row's closing bar


def test_summary_files_from_trial_metrics(tmp_path):
    runs = {}
    for method, ks in (("glann", (0, 1)), ("nsgan", (0, 1))):
        values = sweep.settings(method, 2, 0)
        (tmp_path / f"results/d/sweep").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"results/d/sweep/{method}.json").write_text(json.dumps(
            {"dataset": "d", "method": method, "settings": [{"k": k, "values": values[k]} for k in ks]}))
        for k in ks:
            p = tmp_path / f"results/d/{method}/hp{k}/seed0/metrics.json"
            p.parent.mkdir(parents=True)
            p.write_text(json.dumps({"val_fid_domain": 10.0 - k, "fid_domain": 20.0 + k, "precision": 0.5,
                                     "recall": 0.25 * k, "classes_covered": 10, "diverged": False,
                                     "n_samples": 2000, "n_test": 360, "floor_fid_domain": 3.5 + k / 100,
                                     "floor_kid_domain": -10.6, "kid_domain": 30.0 + k,
                                     "kid_domain_std": 4.0,
                                     "status": "learned" if method == "glann" else "degenerate"}))
            runs[(method, k)] = p
    out = tmp_path / "summary"
    result = summary.summarize_sweeps(list(runs.values()), sorted((tmp_path / "results/d/sweep").glob("*.json")),
                                      out, {("d", "glann"): 33.0})
    assert result["d/glann"]["best_k"] == 1 and result["d/glann"]["best"]["fid_domain"]["mean"] == 21.0
    assert result["d/nsgan"]["best_values"] == sweep.draw("nsgan", 1, 0)
    for name in (*summary.OUTPUTS, summary.CSV):
        assert (out / name).stat().st_size > 100, name
    # without a sweep: sweep.csv's header only, and every other output saying that nothing was
    # swept (the same files with and without a sweep: DVC versions them all)
    assert summary.summarize_sweeps([], [], tmp_path / "none") == {}
    assert (tmp_path / "none/sweep.csv").read_text().startswith("dataset,method,k,seed,val_fid_domain")
    assert sorted(p.name for p in (tmp_path / "none").iterdir()) == sorted((*summary.OUTPUTS, summary.CSV))
    assert "No sweep in this config" in (tmp_path / "none/sweep.md").read_text()
    assert json.loads((tmp_path / "none/sweep.json").read_text()) == {"swept": False}
    for name in summary.OUTPUTS:
        if name.endswith(".png"):
            assert (tmp_path / "none" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    table = (out / "sweep.md").read_text()
    assert "| d | glann | 2 | hp1: " in table and "| 33 |" in table
    # the table states its n and the real-vs-real floor (the range over the runs where they differ)
    assert "d: 2000 samples against 360 test images; real-vs-real floor fid_domain 3.5-3.51, KID -10.6" in table
    assert "| 31 (subsets ± 4) |" in table  # the best setting's KID with its own std over subsets
    # every setting, its values and results, the best (by validation) in bold; status counted
    budget = table.split("## Quality against search budget", 1)[1].split("## Every setting", 1)[0]
    assert "| glann | **20.5** [20-21] | **21** [21-21] |" in budget  # the same runs: both bold
    every = table.split("## Every setting", 1)[1]
    assert f"| d | glann | **hp1** | {summary._values(sweep.settings('glann', 2, 0)[1])} | 9 | 21 | 10 | 1 of 1 |" in every
    assert "| d | nsgan | hp0 | " in every and "| 0 of 1 |" in every and every.count("| d | ") == 4
    rows = list(__import__("csv").DictReader((out / "sweep.csv").open()))
    assert len(rows) == 4 and float(rows[0]["nsgan.lr"] or rows[2]["nsgan.lr"]) > 0
    with pytest.raises(ValueError, match="not a sweep run"):
        summary.collect_trials([tmp_path / "results/d/glann/seed0/metrics.json"])


def test_hp_wildcard_and_the_sweep_record(tmp_path):
    assert sweep.hp_suffix(7) == "/hp7" and sweep.hp_index("/hp7") == 7 and sweep.hp_index("") is None
    drawn = sweep.settings("vae", 3, 5)
    sweep.write_record(tmp_path / "vae.json", "d", "vae", {"seed": 5}, sweep.space_of("vae"),
                       [{"values": v} for v in drawn])
    record = json.loads((tmp_path / "vae.json").read_text())
    assert (record["dataset"], record["method"]) == ("d", "vae")
    assert record["sweep_seed"] == 5 and record["space"] == sweep.SPACES["vae"]
    assert [p.name for p in tmp_path.rglob("*")] == ["vae.json"]  # an end product: no integrity record
    assert record["settings"] == [{"k": k, "run": f"results/d/vae/hp{k}", "values": v, "configured": False}
                                  for k, v in enumerate(drawn)]
    sweep.write_record(tmp_path / "vae.json", "d", "vae", {"seed": 5}, sweep.space_of("vae"),
                       [{"values": v, "configured": k == 0} for k, v in enumerate(drawn)])
    record = json.loads((tmp_path / "vae.json").read_text())
    assert record["settings"][0] == {"k": 0, "run": "results/d/vae", "values": drawn[0], "configured": True}


def test_a_setting_equal_to_the_configured_one_reads_the_configured_runs(tmp_path):
    """v1's sample 0 is v1's default: with the configured setting at v1's default (the population),
    setting 0 is the same computation as the configured runs (bit for bit: the population's
    records of LSGAN's hp0 and configured runs agree), so it trains nothing; the sweep's summary
    reads the configured runs as setting 0, and a dry run plans no hp0 job."""
    import re

    from conftest import copy_workflow, snakemake
    from glann.pipeline.config import fill_defaults

    v1_default = {"lr": 0.0002, "betas": [0.5, 0.999], "critic_steps": 1, "d_batchnorm": True}
    cfg = fill_defaults({"datasets": ["digits"], "methods": ["lsgan", "nsgan"], "seeds": [0],
                         "lsgan": v1_default, "nsgan": {"lr": 0.001}, "sweep": {"settings": 3, "range": "v1"}}, SCHEMA)
    assert sweep.is_configured("lsgan", sweep.v1_table()["lsgan"][0], cfg)
    assert not sweep.is_configured("lsgan", sweep.v1_table()["lsgan"][1], cfg)
    assert not sweep.is_configured("nsgan", sweep.v1_table()["nsgan"][0], cfg)  # its lr is not v1's default
    assert sweep.plan(cfg)["trials"] == [("lsgan", 1), ("lsgan", 2), ("nsgan", 0), ("nsgan", 1), ("nsgan", 2)]
    # the summary: setting 0's rows are the configured runs'
    (tmp_path / "res/d/sweep").mkdir(parents=True)
    sweep.write_record(tmp_path / "res/d/sweep/lsgan.json", "d", "lsgan", {"seed": 0}, {},
                       [{"values": v, "configured": k == 0} for k, v in enumerate(sweep.v1_table()["lsgan"][:2])])
    files = []
    for run, fid in (("lsgan/seed0", 25.0), ("lsgan/seed1", 27.0), ("lsgan/hp1/seed0", 700.0), ("nsgan/seed0", 1.0)):
        p = tmp_path / "res/d" / run / "metrics.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps({"val_fid_domain": fid, "fid_domain": fid, "status": "learned", "classes_covered": 10}))
        files.append(p)
    rows = summary.collect_trials([files[2]], [tmp_path / "res/d/sweep/lsgan.json"], [files[0], files[1], files[3]])
    assert sorted((r["method"], r["k"], r["seed"], r["fid_domain"]) for r in rows) == \
        [("lsgan", 0, 0, 25.0), ("lsgan", 0, 1, 27.0), ("lsgan", 1, 0, 700.0)]
    text = "\n".join(summary.render_settings(rows, {("d", "lsgan"): sweep.v1_table()["lsgan"][:2]},
                                             {"d/lsgan": {"best_k": 0}}))
    assert "| d | lsgan | **hp0** (the configured runs) |" in text and "| d | lsgan | hp1 |" in text
    # the workflow: no job of lsgan's hp0
    wf = copy_workflow(tmp_path / "wf")
    out = snakemake(wf, "-n", "--cores", "1", "--configfile", "config/quick.yaml", "--config", "methods=[lsgan]",
                    "lsgan={lr: 0.0002, betas: [0.5, 0.999], critic_steps: 1, d_batchnorm: true}",
                    "sweep={settings: 2, range: v1, methods: [lsgan]}").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", out.split("Job stats:")[1], re.M))
    assert jobs["train_baseline"] == "2" and "lsgan/hp1/seed0" in out and "lsgan/hp0/" not in out


def test_sweeping_glo_gauss_alone_trains_glanns_glo_for_each_setting(tmp_path):
    """GLO+Gaussian shares GLANN's settings: swept alone, its setting k fits a Gaussian to the GLO
    of GLANN's setting k, which trains (GLANN's IMLE does not)."""
    import re

    from conftest import copy_workflow, snakemake

    wf = copy_workflow(tmp_path / "wf")
    out = snakemake(wf, "-n", "--cores", "1", "--configfile", "config/quick.yaml", "--config",
                    "sweep={settings: 2, methods: [glo_gauss]}").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", out.split("Job stats:")[1], re.M))
    assert (jobs["train_glo"], jobs["fit_gaussian"], jobs["train_imle"], jobs["write_sweep"]) == ("3", "3", "1", "1")
    assert "results/digits/glann/hp1/seed0/glo.pt" in out and "results/digits/glann/hp1/seed0/imle.pt" not in out
    # with the draw's seed 0, GLANN's setting 1 is the embedded default's GLO (the tuning study's
    # pick): the configured runs stand for it (search_space.is_configured) and it trains nothing
    out = snakemake(wf, "-n", "--cores", "1", "--configfile", "config/quick.yaml", "--config",
                    "sweep={settings: 2, seed: 0, methods: [glo_gauss]}").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", out.split("Job stats:")[1], re.M))
    assert (jobs["train_glo"], jobs["fit_gaussian"]) == ("2", "2") and "glann/hp1/" not in out


def test_v1_range_rebuilds_compare_gan_v1s_100_draws():
    """sweep.range v1: random.seed(123) once, models in ALL_GANS order, sample 0 the default, then
    GetSample over the parameters sorted by name (Python 2's random.choice), the stream running on
    from one model to the next."""
    import math
    import random

    from glann.methods.search_space import v1_table

    table = v1_table()
    assert list(table) == ["nsgan", "mmgan", "wgan", "wgan_gp", "dragan", "vae", "lsgan", "began"]
    assert all(len(v) == 100 for v in table.values())
    assert table["nsgan"][0] == {"nsgan.beta1": 0.0, "nsgan.critic_steps": 1, "nsgan.d_batchnorm": True,
                                 "nsgan.lr": 5e-05}
    assert table["wgan_gp"][0]["wgan_gp.critic_steps"] == 5 and table["wgan_gp"][0]["wgan_gp.gp_lambda"] == 10.0
    assert table["began"][0] == {"began.beta1": 0.5, "began.critic_steps": 5, "began.d_batchnorm": False,
                                 "began.gamma": 0.75, "began.lambda_k": 0.001, "began.lr": 0.0001}
    # the stream, step by step: GAN's sample 1 walks beta1, disc_iters, discriminator_batchnorm, learning_rate
    r = random.Random(123)
    beta1 = r.uniform(0.0, 1.0)
    disc = [1, 5][int(r.random() * 2)]
    bn = [True, False][int(r.random() * 2)]
    lr = math.pow(10, r.uniform(-5.0, -2.0))
    assert table["nsgan"][1] == {"nsgan.beta1": beta1, "nsgan.critic_steps": disc, "nsgan.d_batchnorm": bn,
                                 "nsgan.lr": lr}
    # WGAN's first draw comes after GAN's and GAN_MINMAX's 99 samples of 4 draws each (792 - 4 taken above)
    for _ in range(792 - 4):
        r.random()
    wgan = [r.uniform(0.0, 1.0), [1, 5][int(r.random() * 2)], [True, False][int(r.random() * 2)],
            math.pow(10, r.uniform(-5.0, -2.0)), math.pow(10, r.uniform(-3.0, 0.0))]
    assert table["wgan"][1] == dict(zip(("wgan.beta1", "wgan.critic_steps", "wgan.d_batchnorm", "wgan.lr",
                                         "wgan.clip"), wgan))
    for method, samples in table.items():
        for s in samples[1:]:
            lr = s[f"{method}.lr"]
            assert 1e-5 <= lr <= 1e-2 and 0 <= s[f"{method}.beta1"] <= 1
            assert s.get(f"{method}.critic_steps", 1) in (1, 5)
    assert all(1e-4 <= s["began.lambda_k"] <= 1e-2 for s in table["began"][1:])
    assert v1_table() == table


def test_v1_range_in_a_config(tmp_path):
    from glann.methods.search_space import settings, v1_table

    assert settings("lsgan", 8, 0, range_="v1") == v1_table()["lsgan"][:8]
    assert settings("glann", 2, 0, range_="v1") == settings("glann", 2, 0)  # GLANN keeps its own space
    with pytest.raises(ValueError, match="100 settings"):
        settings("vae", 101, 0, range_="v1")


def test_narrow_range_is_v1s_pruned_range_and_first_can_be_the_configured_setting():
    from glann.methods.search_space import settings, space_of
    from glann.pipeline.config import fill_defaults

    cfg = fill_defaults({"datasets": ["digits"], "methods": ["wgan_gp"], "seeds": [0]}, SCHEMA)
    for method in ("mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began", "vae"):
        drawn = settings(method, 12, 3, range_="narrow")
        for s in drawn:
            assert 1e-4 <= s[f"{method}.lr"] <= 1e-3 and s[f"{method}.beta1"] == 0.5
            assert s.get(f"{method}.critic_steps", 1) == 1
        if method in ("wgan_gp", "dragan"):
            assert all(not s.get(f"{method}.d_batchnorm", False) for s in drawn)
            assert all(0.1 <= s[f"{method}.gp_lambda"] <= 10 for s in drawn)
    assert all(s["wgan.clip"] >= 0.01 for s in settings("wgan", 12, 3, range_="narrow"))
    began = settings("began", 12, 3, range_="narrow")
    assert all(s["began.lambda_k"] == 1e-3 and 0.6 <= s["began.gamma"] <= 0.9 for s in began)
    assert "wgan_gp.d_batchnorm" not in space_of("wgan_gp", range_="narrow")
    first = settings("wgan_gp", 4, 3, range_="narrow", configured=cfg)
    assert first[0] == {"wgan_gp.beta1": 0.5, "wgan_gp.critic_steps": 5, "wgan_gp.gp_lambda": 10.0,
                        "wgan_gp.lr": 0.0001}  # v1's default: sample 0
    assert first[1:] == settings("wgan_gp", 4, 3, range_="narrow")[1:]
    with pytest.raises(ValueError, match="unknown sweep range"):
        space_of("vae", range_="tight")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_best_setting_at_its_edges(bad):
    """Non-finite validation values never win, in any position; ties go to the lower k; when every
    setting is non-finite the first (k = 0) is returned, its test value non-finite too."""
    def settings(vals):
        return summary.per_setting([{"dataset": "d", "method": "m", "k": k, "seed": 0, "val_fid_domain": v,
                                     "fid_domain": 1.0 if v is not None and math.isfinite(v) else bad}
                                    for k, v in enumerate(vals)])[("d", "m")]

    for pos in range(3):
        vals = [5.0, 3.0, 4.0]
        vals[pos] = bad
        best = summary.best_setting(settings(vals))
        assert best == min((v, k) for k, v in enumerate(vals) if v is not None and math.isfinite(v))[1]
    assert summary.best_setting(settings([2.0, 2.0, 3.0])) == 0
    assert summary.best_setting(settings([3.0, 2.0, 2.0])) == 1
    every = settings([bad, bad, bad])
    assert summary.best_setting(every) == 0 and not math.isfinite(every[0]["test"])


def test_validation_and_test_scoring_each_use_their_own_statistics(tmp_path, monkeypatch):
    """evaluate(): fid_domain against the test statistics, val_fid_domain against the validation ones,
    in process, with statistics far apart so that a swap shows."""
    import torch

    from glann.atomic import save_npz
    from glann.evaluation import scoring
    from glann.evaluation.metrics import frechet_distance, gaussian_stats

    rng = np.random.default_rng(0)
    fake = rng.normal(size=(120, 4))
    test, val = rng.normal(3.0, 1.0, size=(80, 4)), rng.normal(-2.0, 2.0, size=(80, 4))
    labels = np.repeat(np.arange(2), 40)
    save_npz(tmp_path / "test.npz", mu=test.mean(0), sigma=np.cov(test, rowvar=False), features=test,
             train_features=test, train_labels=labels)
    save_npz(tmp_path / "val.npz", available=np.array(True), mu=val.mean(0), sigma=np.cov(val, rowvar=False),
             features=val)
    save_npz(tmp_path / "inc.npz", available=np.array(False), reason=np.array("test"))
    save_npz(tmp_path / "samples.npz", images=np.zeros((120, 4, 4, 1), np.uint8))
    monkeypatch.setattr(scoring, "load_evaluator", lambda p, d: (None, {"task": "rotation", "test_accuracy": 1.0}))
    monkeypatch.setattr(scoring, "evaluator_outputs", lambda net, x, d: (fake, np.zeros(len(x), int)))
    cfg = {"fid": {"num_samples": 10}, "eval": {"prdc_max_samples": 100, "prdc_k": 3, "prd_runs": 1,
                                                "min_class_share": 0.02, "duplicate_quantile": 0.01,
                                                "birthday_batch_size": 10, "birthday_batches": 2, "kid_subsets": 5,
                                                "kid_subset_size": 50, "bootstrap_resamples": 0}}
    ref = Ref(tmp_path, None, tmp_path / "test.npz", tmp_path / "inc.npz", tmp_path / "val.npz")
    m = scoring.evaluate(tmp_path / "samples.npz", ref, How(cfg, torch.device("cpu")))
    assert m["fid_domain"] == pytest.approx(frechet_distance(*gaussian_stats(fake), *gaussian_stats(test)), rel=1e-6)
    assert m["val_fid_domain"] == pytest.approx(frechet_distance(*gaussian_stats(fake), *gaussian_stats(val)), rel=1e-6)
    assert abs(m["fid_domain"] - m["val_fid_domain"]) > 1.0


def test_the_sweep_table_says_which_differences_between_best_settings_hold():
    from glann.evaluation.verdicts import sweep_differences

    def row(method, fid, std, ci):
        return {"dataset": "d", "method": method, "seeds": [0, 1],
                "best": {"fid_domain": {"mean": fid, "std": std}, "kid_domain": {"mean": None, "std": None}},
                "ci": {"fid_domain_ci": ci, "kid_domain_ci": None}}

    result = {"d/glann": row("glann", 10.0, 1.0, [11.0, 13.0]),      # half-width 1
              "d/nsgan": row("nsgan", 14.0, 1.0, [15.0, 17.0]),      # 4 > 1+1 (seeds), 4 > 1+1 (bootstrap)
              "d/vae": row("vae", 12.5, 0.5, [12.0, 16.0]),          # 2.5 > 1.5 (seeds), 2.5 < 1+2 (bootstrap)
              "d/lsgan": row("lsgan", 11.5, 2.0, [11.5, 11.5])}      # 1.5 < 2+1 (seeds), 1.5 > 1+0 (bootstrap)
    text = "\n".join(sweep_differences(result))
    assert "d, fid_domain: best **glann**; nsgan: yes; vae: within noise (bootstrap); " \
           "lsgan: within noise (seeds)." in text
    assert "d, KID" not in text  # not measured: no verdict
    alone = "\n".join(sweep_differences({"d/glann": result["d/glann"]}))
    assert "d, fid_domain: best **glann**; no other method swept." in alone
