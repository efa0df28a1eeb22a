"""Ten mutants of the optimised objectives, each applied alone and run against tests/test_objectives.py
(tests/README.md, "The optimised objectives"). Run from the repository root:

    python tests/mutation/objective_mutants.py

Every source file is restored after each mutant, also when a run fails."""
import signal, subprocess, sys
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a kill still restores the source (finally)
M = [
 ("src/glann/methods/gan_losses.py", "return 0.5 * ((torch.sigmoid(d_real) - 1).pow(2).mean() + torch.sigmoid(d_fake).pow(2).mean())", "return ((torch.sigmoid(d_real) - 1).pow(2).mean() + torch.sigmoid(d_fake).pow(2).mean())"),
 ("src/glann/methods/gans.py", "loss = loss + nets.cfg[\"gp_lambda\"] * self.penalty(nets.D, real, fake, nets.gen)", "loss = loss + 10.0 * self.penalty(nets.D, real, fake, nets.gen)"),
 ("src/glann/methods/gan_losses.py", "return penalty_slopes(torch.sigmoid(critic(xhat).float()), xhat)", "return penalty_slopes(critic(xhat).float(), xhat)"),
 ("src/glann/methods/gan_losses.py", "return -F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))", "return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))"),
 ("src/glann/methods/gan_losses.py", "return real + 0.5 * real.std() * u", "return real + real.std() * u"),
 ("src/glann/methods/vae.py", "return per_pixel.flatten(1).sum(1) / channels", "return per_pixel.flatten(1).mean(1)"),
 ("src/glann/methods/vae.py", "kl = 0.5 * (mu.pow(2) + std.pow(2) - torch.log(1e-8 + std.pow(2)) - 1).sum(1)", "kl = (mu.pow(2) + std.pow(2) - torch.log(1e-8 + std.pow(2)) - 1).sum(1)"),
 ("src/glann/methods/imle.py", "loss = (T(matched_noise[b]) - codes[b]).pow(2).sum(1).mean()", "loss = (T(matched_noise[b]) - codes[b]).pow(2).mean()"),
 ("src/glann/methods/imle.py", "loss = (out - to_float_images(images[b])).pow(2).flatten(1).sum(1).mean()", "loss = (out - to_float_images(images[b])).abs().flatten(1).sum(1).mean()"),
 ("src/glann/methods/gans.py", "nets.k.value = nets.k.value + nets.cfg[\"lambda_k\"] * terms[\"balance\"].float()", "nets.k.value = (nets.k.value + nets.cfg[\"lambda_k\"] * terms[\"balance\"].float()).clamp(0, 1)"),
]
killed = 0
for f, old, new in M:
    p = Path(f); s = p.read_text()
    assert old in s, old
    p.write_text(s.replace(old, new, 1))
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_objectives.py"],
                           capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        dead = r.returncode != 0
    finally:
        p.write_text(s)
    killed += dead
    print(("KILLED " if dead else "SURVIVED ") + f + ": " + new[:70], flush=True)
print(f"{killed} of {len(M)} killed")
