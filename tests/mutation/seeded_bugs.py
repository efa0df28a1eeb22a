"""Seeded science bugs: each must make at least one named test fail.

Run by hand (about 7 minutes on 2 CPU cores):
    python tests/mutation/seeded_bugs.py [name substring ...]
Each bug is applied to a scratch copy of src/ (never to the checkout), the named
tests run against that copy, and the script prints KILLED (a named test failed),
SURVIVED or BROKEN (the patched code does not even import) per bug;
it exits non-zero if any bug survives. Patches are exact text replacements, so a
refactor that moves the code makes the script say which patch no longer applies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
T_SCI = "tests/test_science.py"
T_EVAL = "tests/test_evaluation.py"

BUGS = [  # (name, file under src/glann, old text, new text, tests)
    ("IMLE without nearest-neighbour matching", "methods/imle.py",
     "matched_noise = noise[idx]", "matched_noise = noise[torch.randperm(len(noise))[: len(idx)]]",
     [f"{T_SCI}::test_imle_covers_every_mode_of_a_planted_mixture"]),
    ("WGAN-GP without its gradient penalty", "methods/gans.py",
     "wgan_gp_term,\n", "None,\n",
     [f"{T_SCI}::test_gan_training_uses_the_configured_objective", f"{T_SCI}::test_wgan_gp_penalty_weight_changes_training"]),
    ("LSGAN generator target 0", "methods/gan_losses.py",
     "return 0.5 * (torch.sigmoid(d_fake) - 1).pow(2).mean()", "return 0.5 * torch.sigmoid(d_fake).pow(2).mean()",
     [f"{T_SCI}::test_gan_objectives_match_hand_computed_values"]),
    ("LSGAN on raw logits", "methods/gan_losses.py",
     "return 0.5 * ((torch.sigmoid(d_real) - 1).pow(2).mean() + torch.sigmoid(d_fake).pow(2).mean())",
     "return 0.5 * ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean())",
     [f"{T_SCI}::test_gan_objectives_match_hand_computed_values"]),
    ("saturating NS-GAN generator loss", "methods/gans.py",
     "\"nsgan\": LogitObjective(bce_d_loss, nonsaturating_g_loss)", "\"nsgan\": LogitObjective(bce_d_loss, minimax_g_loss)",
     [f"{T_SCI}::test_gan_objectives_match_hand_computed_values", f"{T_SCI}::test_nsgan_generator_gradient_does_not_saturate"]),
    ("MM-GAN with the non-saturating loss", "methods/gans.py",
     "\"mmgan\": LogitObjective(bce_d_loss, minimax_g_loss)", "\"mmgan\": LogitObjective(bce_d_loss, nonsaturating_g_loss)",
     [f"{T_SCI}::test_gan_objectives_match_hand_computed_values"]),
    ("G stepping with every D step", "methods/gans.py",
     "return step == 0 or (step - 1) % n_critic == 0", "return True",
     [f"{T_SCI}::test_gan_training_uses_the_configured_objective"]),
    ("BN in the WGAN-GP critic", "methods/gans.py",
     "critic_batchnorm=False, resample_for_g=True", "resample_for_g=True",
     [f"{T_SCI}::test_gan_training_uses_the_configured_objective"]),
    ("WGAN without weight clipping", "methods/gans.py",
     "p.clamp_(-nets.cfg[\"clip\"], nets.cfg[\"clip\"])", "pass",
     [f"{T_SCI}::test_gan_training_uses_the_configured_objective"]),
    ("WGAN-GP penalty on the fakes instead of the interpolates", "methods/gan_losses.py",
     "xhat = (real + alpha * (fake - real)).requires_grad_(True)", "xhat = fake.clone().requires_grad_(True)",
     [f"{T_SCI}::test_penalties_are_evaluated_on_the_points_their_papers_define", "tests/test_baselines.py::test_gradient_penalty_matches_direct_autograd"]),
    ("DRAGAN penalty on the raw output", "methods/gan_losses.py",
     "return penalty_slopes(torch.sigmoid(critic(xhat).float()), xhat)", "return penalty_slopes(critic(xhat).float(), xhat)",
     [f"{T_SCI}::test_penalties_are_evaluated_on_the_points_their_papers_define"]),
    ("DRAGAN perturbation without the batch std", "methods/gan_losses.py",
     "return real + 0.5 * real.std() * u", "return real + 0.5 * u",
     [f"{T_SCI}::test_penalties_are_evaluated_on_the_points_their_papers_define"]),
    ("BEGAN k_t that never moves", "methods/gans.py",
     "nets.k.value = nets.k.value + nets.cfg[\"lambda_k\"] * terms[\"balance\"].float()", "pass",
     [f"{T_SCI}::test_gan_training_uses_the_configured_objective"]),
    ("BEGAN D loss without k_t", "methods/gan_losses.py",
     "return {\"d\": err_real - k * err_fake,", "return {\"d\": err_real - err_fake,",
     [f"{T_SCI}::test_began_losses_and_k_update_match_hand_computed_values"]),
    ("GAN noise N(0, 1) instead of U(-1, 1)", "methods/gans.py",
     "return torch.rand(n, dim, generator=gen) * 2 - 1", "return torch.randn(n, dim, generator=gen)",
     ["tests/test_faithfulness.py::test_gan_discriminator_sees_real_and_fake_separately_and_g_reuses_z"]),
    ("G step on fresh noise in every GAN", "methods/gans.py",
     "                if objective.resample_for_g:\n", "                if True:\n",
     ["tests/test_faithfulness.py::test_gan_discriminator_sees_real_and_fake_separately_and_g_reuses_z"]),
    ("v1 generator without BN after the first fc", "methods/models.py",
     "nn.Linear(latent_dim, 1024), _bn1d(1024), act(),", "nn.Linear(latent_dim, 1024), act(),",
     ["tests/test_models.py::test_v1_generator_is_compare_gans_on_every_dataset"]),
    ("v1 batch norm with torch's default momentum", "methods/models.py",
     "V1_BN = {\"momentum\": 0.001, \"eps\": 0.001}", "V1_BN = {\"momentum\": 0.1, \"eps\": 0.001}",
     ["tests/test_models.py::test_v1_generator_is_compare_gans_on_every_dataset"]),
    ("VAE decoder with LeakyReLU", "methods/vae.py",
     "dec = V1Generator(d, h, c, \"relu\").to(ctx.device)", "dec = V1Generator(d, h, c, \"lrelu\").to(ctx.device)",
     ["tests/test_trainers.py::test_vae_networks_are_v1s"]),
    ("VAE sigma as exp instead of softplus", "methods/vae.py",
     "return mu, 1e-6 + F.softplus(raw)", "return mu, 1e-6 + raw.exp()",
     [f"{T_SCI}::test_vae_kl_and_likelihoods_match_torch_distributions"]),
    ("precision and recall swapped in evaluate()", "evaluation/scoring.py",
     "metrics.update({k: float(v) for k, v in compute_prdc(real_sub, fake_sub, cfg[\"eval\"][\"prdc_k\"]).items()})",
     "metrics.update({{'precision': 'recall', 'recall': 'precision'}.get(k, k): float(v) for k, v in compute_prdc(real_sub, fake_sub, cfg[\"eval\"][\"prdc_k\"]).items()})",
     [f"{T_EVAL}::test_evaluate_on_features_with_known_precision_recall_and_modes"]),
    ("PRD F8 and F1/8 swapped", "evaluation/scoring.py",
     "metrics[\"prd_f8\"] = max_f_beta(p, r, 8.0)", "metrics[\"prd_f8\"] = max_f_beta(p, r, 1 / 8.0)",
     [f"{T_EVAL}::test_evaluate_on_features_with_known_precision_recall_and_modes"]),
    ("class KL reversed", "evaluation/metrics.py",
     "kl = float(np.sum(hist * (np.log(hist + eps) - np.log(ref + eps))))",
     "kl = float(np.sum(ref * (np.log(ref + eps) - np.log(hist + eps))))",
     [f"{T_EVAL}::test_mode_coverage_kl_direction"]),
    ("VAE KL with the wrong sign of log sigma^2", "methods/vae.py",
     "kl = 0.5 * (mu.pow(2) + std.pow(2) - torch.log(1e-8 + std.pow(2)) - 1).sum(1)",
     "kl = 0.5 * (mu.pow(2) + std.pow(2) + torch.log(1e-8 + std.pow(2)) - 1).sum(1)",
     [f"{T_SCI}::test_vae_kl_and_likelihoods_match_torch_distributions"]),
    ("GLO learning rate that never halves", "methods/glo.py",
     "decay = 0.5 ** ((epoch - 1) // cfg[\"lr_halve_every\"])", "decay = 1.0",
     ["tests/test_properties.py::test_glo_learning_rates_follow_the_schedule_in_every_group"]),
    ("GLO schedule on the generator's group only", "methods/glo.py",
     "for opt, lr in ((opt_g, cfg[\"lr_generator\"]), (opt_z, cfg[\"lr_codes\"])):",
     "for opt, lr in ((opt_g, cfg[\"lr_generator\"]),):",
     ["tests/test_properties.py::test_glo_learning_rates_follow_the_schedule_in_every_group"]),
    ("baseline generator sampled in train mode", "methods/sampling.py",
     "self.G = self.G.to(device).eval()", "self.G = self.G.to(device).train()",
     ["tests/test_properties.py::test_a_trained_generator_samples_in_eval_mode"]),
    ("GAN rollback to the initial weights", "methods/training.py",
     "            last_good = copy.deepcopy(state[rollback].state_dict())\n", "            pass\n",
     [f"{T_SCI}::test_gan_rollback_keeps_the_last_finished_epoch_bit_for_bit"]),
    ("resume without optimiser state (every trainer)", "methods/training.py",
     "            for name, obj in state.items():\n                obj.load_state_dict(saved[\"state\"][name])",
     "            for name, obj in state.items():\n                if not name.startswith(\"opt\"):\n"
     "                    obj.load_state_dict(saved[\"state\"][name])",
     [f"{T_SCI}::test_resume_equals_uninterrupted"]),
    ("resume without RNG state (every trainer)", "methods/training.py",
     "        set_rng_state(saved[\"rng\"], gen)\n", "",
     [f"{T_SCI}::test_resume_equals_uninterrupted"]),
    ("pixel IMLE resume without its matches", "methods/training.py",
     "            for name, obj in state.items():\n                obj.load_state_dict(saved[\"state\"][name])",
     "            for name, obj in state.items():\n                if name != \"matched\":\n"
     "                    obj.load_state_dict(saved[\"state\"][name])",
     [f"{T_SCI}::test_resume_equals_uninterrupted[imle_pixel]"]),
    ("summary grouped by method across datasets", "evaluation/summary.py",
     "group = [r for r in rows if (r[\"dataset\"], r[\"method\"]) == key]",
     "group = [r for r in rows if r[\"method\"] == key[1]]",
     [f"{T_EVAL}::test_summary_on_two_datasets_and_two_seeds"]),
    ("std written where the mean belongs in summary.json", "evaluation/summary.py",
     "flat = {f\"{d}/{m}/{k}\": cell[k][0]", "flat = {f\"{d}/{m}/{k}\": cell[k][1]",
     [f"{T_EVAL}::test_summary_on_two_datasets_and_two_seeds"]),
    ("birthday support off by 2x", "evaluation/metrics.py",
     "support = (s * (s - 1) / 2) * num_batches", "support = (s * (s - 1)) * num_batches",
     [f"{T_EVAL}::test_birthday_support_estimate_is_unbiased_for_known_support"]),
    ("birthday s^2 instead of C(s, 2)", "evaluation/metrics.py",
     "support = (s * (s - 1) / 2) * num_batches", "support = (s * s) * num_batches",
     [f"{T_EVAL}::test_birthday_support_estimate_is_unbiased_for_known_support"]),
    ("VGG features one layer short", "methods/losses.py",
     "self.features = features[: self.layers[-1] + 1].eval()", "self.features = features[: self.layers[-1]].eval()",
     ["tests/test_losses_and_search.py::test_vgg_loss_equals_the_released_glann_loss"]),
    ("VGG input in [0, 1] instead of 2x - 1", "methods/losses.py",
     "        return 2 * x - 1\n", "        return x\n",
     ["tests/test_losses_and_search.py::test_vgg_loss_equals_the_released_glann_loss"]),
    ("v1 generator sampled with its stale moving averages", "methods/sampling.py",
     "if bn_stats == \"recalibrated\" and final.get(\"generator_arch\") == \"compare_gan_v1\":", "if False:",
     ["tests/test_properties.py::test_bn_stats_running_keeps_v1s_moving_averages_and_recalibrated_replaces_them"]),
    ("BN recalibration as an EMA, not a cumulative average", "methods/models.py",
     "bn.momentum = None  # cumulative average", "pass",
     ["tests/test_properties.py::test_recalibrated_statistics_are_the_population_statistics_of_the_final_weights"]),
    ("GLANN's mapping sampled in train mode", "methods/sampling.py",
     "self.T = self.T.to(device).eval()", "self.T = self.T.to(device).train()",
     ["tests/test_properties.py::test_glanns_generator_and_mapping_sample_in_eval_mode"]),
    ("GLO generator sampled in train mode", "methods/glo.py",
     "    return G.to(device).eval()\n", "    return G.to(device)\n",
     ["tests/test_properties.py::test_glanns_generator_and_mapping_sample_in_eval_mode"]),
    ("every batch of a sampling call reseeded", "methods/sampling.py",
     "out.append(to_uint8_images(self.decode(self.noise(min(batch_size, n - i), gen))).cpu())",
     "out.append(to_uint8_images(self.decode(self.noise(min(batch_size, n - i), torch.Generator().manual_seed(seed)))).cpu())",
     ["tests/test_properties.py::test_two_batches_of_one_sampling_call_never_share_noise"]),
    ("a schedule decaying IMLE's lr every epoch", "methods/imle.py",
     "        matched_noise = noise[idx]\n", "        matched_noise = noise[idx]\n        opt.param_groups[0][\"lr\"] *= 0.5\n",
     ["tests/test_properties.py::test_every_other_trainer_keeps_its_configured_lr_in_every_group_at_every_step"]),
    ("WGAN's RMSProp at TF's default lr, not the configured one", "methods/gans.py",
     "TFRMSProp(params, lr=cfg[\"lr\"])", "TFRMSProp(params, lr=1e-3)",
     ["tests/test_properties.py::test_every_other_trainer_keeps_its_configured_lr_in_every_group_at_every_step"]),
    ("sample.bn_batches ignored", "methods/sampling.py",
     "for _ in range(bn_batches)])", "for _ in range(BN_BATCHES)])",
     ["tests/test_properties.py::test_bn_batches_sets_how_many_noise_batches_re_estimate_the_statistics"]),
    ("validation statistics taken from the training split", "evaluation/scoring.py",
     'xva, _ = load_prepared(data_dir, "val")', 'xva, _ = load_prepared(data_dir, "train")',
     ["tests/test_splits.py::test_real_statistics_are_the_test_splits_and_the_curves_the_validation_splits"]),
    ("evaluator trained on the test split", "evaluation/evaluator.py",
     'xtr, ytr = load_prepared(data_dir, "train")', 'xtr, ytr = load_prepared(data_dir, "test")',
     ["tests/test_splits.py::test_the_evaluator_trains_on_train_and_reports_test_accuracy_never_reading_val"]),
    ("IDX labels one image off", "data/sources.py",
     "ds.targets.numpy().astype(np.int64)]", "np.roll(ds.targets.numpy().astype(np.int64), 1)]",
     ["tests/test_splits.py::test_labels_stay_with_their_images_through_the_file_format_loaders"]),
    ("validation labels not carved with their images", "data/datasets.py",
     "return x[tr], y[tr], x[va], y[va]", "return x[tr], y[tr], x[va], np.sort(y[va])",
     ["tests/test_splits.py::test_labels_stay_with_their_images_through_the_carved_splits"]),
    ("VGG taps on the convolution outputs", "methods/losses.py",
     "self.reads = tuple(i + 1 for i in self.layers[:-1]) + (self.layers[-1],)", "self.reads = self.layers",
     ["tests/test_losses_and_search.py::test_vgg_loss_equals_the_released_glann_loss"]),
    ("sweep's best setting picked on test, not validation", "evaluation/sweeps.py",
     'return min(settings, key=lambda k: (settings[k]["val"], k))',
     'return min(settings, key=lambda k: (settings[k]["test"], k))',
     ["tests/test_sweeps.py::test_the_best_setting_is_picked_on_validation_and_reported_on_test",
      "tests/test_sweeps.py::test_budget_curve_matches_exact_enumeration"]),
    ("every method's sweep drawn from one random stream", "methods/search_space.py",
     "rng = np.random.default_rng([int(seed), zlib.crc32(owner.encode()), int(k)])",
     "rng = np.random.default_rng([int(seed), int(k)])",
     ["tests/test_sweeps.py::test_draws_are_deterministic_prefix_stable_and_inside_their_ranges"]),
    ("a sweep setting's values not applied over the configured ones", "methods/search_space.py",
     "            out[name] = value\n", "            out.setdefault(name, value)\n",
     ["tests/test_sweeps.py::test_glo_gauss_shares_glanns_settings_and_apply_sets_each_section"]),
]


def main(only=()) -> int:
    """``only``: substrings of bug names to run (default: all)."""
    survived = []
    py = sys.executable
    bugs = [b for b in BUGS if not only or any(o in b[0] for o in only)]
    for name, rel, old, new, tests in bugs:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            target = src / "glann" / rel
            text = target.read_text()
            if old not in text:
                print(f"PATCH DOES NOT APPLY  {name} ({rel})", flush=True)
                survived.append(name)
                continue
            target.write_text(text.replace(old, new, 1))
            env = {**os.environ, "PYTHONPATH": str(src), "GLANN_TRACKING": "0"}
            proc = subprocess.run([py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                                  cwd=REPO, env=env, capture_output=True, text=True)
            failed = [ln.split(" ")[1] for ln in proc.stdout.splitlines() if ln.startswith("FAILED ")]
            # killed only by a failing test: an error (the patched code does not even import) is a
            # broken patch, which proves nothing
            verdict = "KILLED" if failed else "SURVIVED" if proc.returncode == 0 else "BROKEN"
            print(f"{verdict:9} {name}: {', '.join(failed) or proc.stdout.strip().splitlines()[-1]}", flush=True)
            if not failed:
                survived.append(name)
    print(f"{len(bugs) - len(survived)}/{len(bugs)} seeded bugs killed by a failing test")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
