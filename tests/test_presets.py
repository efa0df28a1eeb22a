"""The paper presets end to end (tests/presets.py): MNIST and Fashion-MNIST (28x28 grey), and
every baseline trained and sampled at their shape in process; the colour ones are
tests/test_presets_colour.py (a file each worker can take); every preset's paper values
pinned."""

import pytest
import yaml

from conftest import REPO
from presets import METHODS, PRESETS, run_preset, train_and_sample_every_trainer

# MNIST runs GLANN (the VGG loss on grey 28x28); Fashion-MNIST, the same shape, runs WGAN (the
# paper's best MNIST model: a v1 generator and its BN re-estimation) with two seeds. Every other
# baseline is trained at this shape in process below (the GLO+Gaussian, NS-GAN and VAE jobs run
# in the shared quick run).


@pytest.mark.pipeline
def test_paper_preset_end_to_end_mnist(tmp_path, torch_home):
    run_preset("mnist", tmp_path, torch_home, methods=["glann"])


def test_every_trained_method_trains_and_samples_in_grey(tmp_path):
    train_and_sample_every_trainer("mnist", tmp_path)


@pytest.mark.pipeline
def test_paper_preset_end_to_end_fashion_with_two_seeds(tmp_path, torch_home):
    """Fashion-MNIST's preset and loader (MNIST's shape), WGAN with two seeds: the summary's
    mean ± std over seeds."""
    run_preset("fashion", tmp_path, torch_home, methods=["wgan"], seeds=(0, 1))


@pytest.mark.parametrize("preset", PRESETS)
def test_paper_preset_values_are_the_papers(preset):
    """Pinned: a preset edited to 1 seed, loss l2, 2 epochs or no Inception fails here."""
    cfg = yaml.safe_load((REPO / "config/paper" / f"{preset}.yaml").read_text())
    big = preset in ("cifar10", "celeba64")
    assert cfg["datasets"] == [preset] and cfg["methods"] == METHODS and cfg["seeds"] == [0, 1, 2]
    assert cfg["device"] == "cuda"
    # the paper's GLO (its learning rates pinned against the embedded default's tuned ones:
    # test_config.py::test_presets_that_claim_the_papers_settings_get_them_through_the_tuned_default)
    assert cfg["glo"] == {"epochs": 500 if big else 200, "lr_halve_every": 50 if big else 20, "loss": "vgg",
                          "lr_generator": 0.001, "lr_codes": 0.01}
    assert cfg["imle"]["epochs"] == 50 and cfg["imle_pixel"]["epochs"] == 50
    # compare_gan v1's budgets (generate_tasks_lib.TuneParams): 20 MNIST/Fashion, 100 CIFAR-10, 40 CelebA
    gan_epochs = {"mnist": 20, "fashion": 20, "cifar10": 100, "celeba64": 40}[preset]
    assert all(cfg[m]["epochs"] == gan_epochs for m in METHODS[3:])  # flow (not in the paper) as the GANs
    assert cfg["sample"]["num_samples"] == 10000
    assert cfg["fid"] == {"require_inception": True, "num_samples": 10000}
    assert cfg["data"][preset]["download"] is False


# the config section whose epochs a method's pilot curve chooses (GLANN's curve is its IMLE's,
# scored with the final GLO; GLO+Gaussian's is GLO's, the stage it shares with GLANN)
CURVE_STAGE = {"glann": "imle", "glo_gauss": "glo"}
SHARED = {"glo"}  # a stage two rows train: it keeps its pilot budget (docs/studies.md)


def test_the_population_trains_at_the_converged_studys_budgets_and_settings():
    """config/study/digits_population.yaml is the converged study with a sweep: every section a run's
    key reads (each method's budget and settings, the data, sampling, evaluation) is the converged
    study's, so its configured runs are the converged study's runs (the same record keys)."""
    conv = yaml.safe_load((REPO / "config/study/digits_converged.yaml").read_text())
    pop = yaml.safe_load((REPO / "config/study/digits_population.yaml").read_text())
    assert set(pop["methods"]) <= set(conv["methods"]) and pop["sweep"]["settings"] >= 8
    assert set(pop["sweep"]["methods"]) == set(pop["methods"]) and len(pop["seeds"]) >= 2
    for key in set(conv) | set(pop):
        if key not in ("methods", "seeds", "records", "sweep"):
            assert pop.get(key) == conv.get(key), key


def test_the_converged_study_trains_each_method_for_the_budget_its_pilot_curve_chose():
    """config/study/digits_converged.yaml is its pilot with each method's epochs set by the rule of
    docs/studies.md on the pilot's recorded validation curves: nothing else differs, every method has
    a recorded pilot curve, and a shared stage keeps the pilot's budget, at least the rule's."""
    from glann.evaluation.budgets import from_records

    pilot = yaml.safe_load((REPO / "config/study/digits_converged_pilot.yaml").read_text())
    study = yaml.safe_load((REPO / "config/study/digits_converged.yaml").read_text())
    picks = {p["method"]: p for p in from_records(REPO / pilot["records"]["dir"]) if p["seed"] == 0 and not p["setting"]}
    assert set(picks) == set(study["methods"]) == set(pilot["methods"])
    stages = {CURVE_STAGE.get(m, m) for m in study["methods"]}
    for key in set(pilot) | set(study):
        if key in stages:
            assert {k: v for k, v in study[key].items() if k != "epochs"} == \
                   {k: v for k, v in pilot[key].items() if k != "epochs"}, key
        elif key not in ("seeds", "records"):
            assert study.get(key) == pilot.get(key), key
    assert study["seeds"] == [0, 1, 2] and study["records"]["dir"] != pilot["records"]["dir"]
    for method, pick in picks.items():
        stage = CURVE_STAGE.get(method, method)
        assert pick["ran"] == pilot[stage]["epochs"], f"{method}: the pilot's record is not of the pilot's budget"
        if stage in SHARED:
            assert study[stage]["epochs"] == pilot[stage]["epochs"] >= pick["epoch"], method
        else:
            assert study[stage]["epochs"] == pick["epoch"], (method, pick)
