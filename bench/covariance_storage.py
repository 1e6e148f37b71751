"""Covariance storage at scale (issues 12.3 and 13.7): bytes of each storage form, and what each
lossy form does to the chosen subspaces.

    python bench/covariance_storage.py [--samples 24] [--max-length 128] [--layers-every 3] [--quick]

1. Bytes, computed from the shapes (SmolLM2-135M, Llama-2-7B, Llama-2-70B; SC-LoRA's sites:
   one input per shared-input group, the output side of down_proj), for both datasets, as a
   fraction of the model's bf16 bytes (target <= 0.5x for the default) and of storing every
   target module's output covariance in float64 (target <= 0.5x).
2. Bytes measured: calibrate on the embedded SmolLM2-135M writes each form.
3. Effect on the subspace: for each lossy form, the relative loss of reward
   (R* - R(S_stored)) / |R*|, R under the float64 covariances of the output h = W x, S_stored the
   top-r eigenvectors of dCov built from the stored covariances, over beta in {0, 0.5, 0.9, 0.99}
   and r in {16, 64}; on the embedded model's covariances (every `--layers-every`-th layer) and
   on synthetic spectra (Wishart, and activation-like: power law + outlier channels).
   The "minor" column is the same for the r SMALLEST eigenvectors of Cov- (LoRA-Null's null space).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import LlamaConfig, LlamaForCausalLM

from sclora_tools import calibrate
from sclora_tools.collect import plan_sites
from sclora_tools.core import covariance_codec as codec
from sclora_tools.io.checkpoint import CheckpointReader
from sclora_tools.io.covariances import covariance_path, open_covariances, write_covariances
from sclora_tools.io.manifest_types import CALIBRATION_ROLES, Role

SHAPES = {  # name: hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings
    "SmolLM2-135M": (576, 1536, 30, 9, 3, 49152, True),
    "Llama-2-7B": (4096, 11008, 32, 32, 32, 32000, False),
    "Llama-2-70B": (8192, 28672, 80, 64, 8, 32000, False),
}
LOSSY = ("float32", "float24", "corr24", "corr16")
BETAS, RANKS = (0.0, 0.5, 0.9, 0.99), (16, 64)
DEGENERATE = [0]


def skeleton(hidden, intermediate, layers, heads, kv_heads, vocab, tied):
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, vocab_size=vocab, tie_word_embeddings=tied)
    with init_empty_weights():
        return LlamaForCausalLM(config)


def llama_groups(layers: int) -> list[list[str]]:
    """Llama's shared inputs (q/k/v, gate/up), as models.shared_input_groups finds them."""
    groups = []
    for layer in range(layers):
        prefix = f"model.layers.{layer}"
        groups += [[f"{prefix}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")], [f"{prefix}.self_attn.o_proj"],
                   [f"{prefix}.mlp.gate_proj", f"{prefix}.mlp.up_proj"], [f"{prefix}.mlp.down_proj"]]
    return groups


def bytes_table() -> None:
    print("1. artefact bytes from the shapes (both datasets)")
    header = f"{'model':<14} {'weights bf16':>13} {'output covs f64':>16}  " + "  ".join(f"{form:>16}" for form in codec.FORMATS)
    print(header)
    for name, shape in SHAPES.items():
        net = skeleton(*shape)
        model_bytes = 2 * sum(p.numel() for n, p in net.named_parameters() if not (shape[-1] and n == "lm_head.weight"))  # tied: one copy
        sites = plan_sites(net, llama_groups(shape[2]))
        modules = dict(net.named_modules())
        output_covs = 2 * sum(8 * modules[t].weight.shape[0] ** 2 for site in sites for t in site.serves)
        cells = []
        for form in codec.FORMATS:
            stored = 2 * sum(codec.stored_bytes(site.dim, form) for site in sites)
            cells.append(f"{gb(stored):>6} {stored / model_bytes:4.2f}x {stored / output_covs:4.2f}o")
        print(f"{name:<14} {gb(model_bytes):>13} {gb(output_covs):>16}  " + "  ".join(f"{c:>16}" for c in cells))
    print("   each cell: GB, x = fraction of the bf16 weights, o = fraction of every module's float64 output covariance")


def gb(size: int) -> str:
    return f"{size / 1e9:.3g} GB" if size >= 1e8 else f"{size / 1e6:.3g} MB"


def reference_calibration(model: str, samples: int, max_length: int, out: Path, targets: list[str] | None) -> Path:
    """The float64 covariances every lossy form is compared with."""
    calibrate(model, "dialogsum", "safety", out, samples=samples, max_length=max_length, targets=targets, storage="float64", progress=False)
    return out


def measured(reference: Path, scratch: Path) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    print(f"\n2. measured on {manifest['model']['spec']} (covariance files; their size does not depend on the samples)")
    weights = sum(Path(manifest["model"]["path"], name).stat().st_size for name in manifest["model"]["weight_files"])
    print(f"   model weights on disk: {gb(weights)} ({manifest['model']['checkpoint_dtype']}); {len(manifest['config']['sites'])} sites")
    for form in codec.FORMATS:
        directory = scratch / form
        directory.mkdir(exist_ok=True)
        for role in CALIBRATION_ROLES:
            with open_covariances(reference, role) as stored:
                write_covariances(directory, role, {key: stored.get(key) for key in stored.keys()}, form)
        size = sum(covariance_path(directory, role).stat().st_size for role in CALIBRATION_ROLES)
        print(f"   {form:<15} {gb(size):>9}  {size / weights:.3f}x of the weights on disk, {size / (weights / 2):.3f}x of them in bf16")


def reward_losses(cov_pos, cov_neg, weight, forms) -> dict[str, float]:
    """Worst relative reward loss of each form over BETAS x RANKS, plus the minor-subspace loss."""
    decoded = {form: [codec.decode(codec.encode(c, form), c.shape[0], form) for c in (cov_pos, cov_neg)] for form in forms}
    worst = dict.fromkeys(forms, 0.0)
    minor = dict.fromkeys(forms, 0.0)
    for beta in BETAS:
        true = output_delta(cov_pos, cov_neg, weight, beta)
        values, vectors = torch.linalg.eigh(0.5 * (true + true.T))
        for form, (p, n) in decoded.items():
            stored = output_delta(p, n, weight, beta)
            _, stored_vectors = torch.linalg.eigh(0.5 * (stored + stored.T))
            for rank in RANKS:
                best = values[-rank:].sum().item()
                basis = stored_vectors[:, -rank:]
                achieved = torch.trace(basis.T @ true @ basis).item()
                worst[form] = max(worst[form], relative(best - achieved, best, values, rank))
    minor_true = torch.linalg.eigvalsh(cov_neg)
    for form, (_, n) in decoded.items():
        vectors = torch.linalg.eigh(n).eigenvectors
        for rank in RANKS:
            best = minor_true[:rank].sum().item()
            achieved = torch.trace(vectors[:, :rank].T @ cov_neg @ vectors[:, :rank]).item()
            minor[form] = max(minor[form], relative(achieved - best, best, minor_true, rank))
    return {**{f: worst[f] for f in forms}, **{f"minor {f}": minor[f] for f in forms}}


def output_delta(cov_pos, cov_neg, weight, beta):
    return weight @ ((1 - beta) * cov_pos - beta * cov_neg) @ weight.T


def relative(loss: float, best: float, eigenvalues: torch.Tensor, rank: int) -> float:
    """loss / |R*|; 0 where R* is zero at the matrix's scale (every subspace of a null space is
    optimal there, e.g. fewer tokens than dimensions), which the caller counts as degenerate."""
    scale = eigenvalues.abs().sort(descending=True).values[:rank].sum().item()
    if abs(best) <= 1e-9 * scale:
        DEGENERATE[0] += 1
        return 0.0
    return loss / abs(best)


def on_model(reference: Path, every: int) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    tokens = [d["tokens"] for d in manifest["datasets"]]
    largest = max(site["dim"] for site in manifest["config"]["sites"])
    reader = CheckpointReader(Path(manifest["model"]["path"]))
    worst: dict[str, float] = {}
    layers = sorted({int(site["module"].split(".")[2]) for site in manifest["config"]["sites"]})[::every]
    with open_covariances(reference, Role.POS) as pos, open_covariances(reference, Role.NEG) as neg:
        for site in manifest["config"]["sites"]:
            if int(site["module"].split(".")[2]) not in layers:
                continue
            cov_pos, cov_neg = pos.get(site["key"]), neg.get(site["key"])
            for target in site["serves"]:
                weight = reader.read(f"{target}.weight").double() if site["side"] == "input" else torch.eye(site["dim"], dtype=torch.float64)
                for key, value in reward_losses(cov_pos, cov_neg, weight, LOSSY).items():
                    worst[key] = max(worst.get(key, 0.0), value)
    print(f"\n3a. reward loss on the embedded model's covariances, {tokens[0]:,} + / {tokens[1]:,} - tokens "
          f"({min(tokens) / largest:.1f} per dimension of the largest site); layers {layers}; worst over targets, beta, r")
    print_losses(worst)


def synthetic(dim: int, seed: int, kind: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if kind == "wishart":
        x = torch.randn(4 * dim, dim, generator=generator, dtype=torch.float64)
    else:
        basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        x = (torch.randn(4 * dim, dim, generator=generator, dtype=torch.float64) * torch.arange(1, dim + 1, dtype=torch.float64).pow(-0.5)) @ basis.T
        x[:, torch.randperm(dim, generator=generator)[:4]] *= 30.0
    return x.T @ x / x.shape[0]


def on_synthetic(dims: list[int]) -> None:
    print("\n3b. reward loss on synthetic covariances (output side, W = I; worst over beta, r)")
    for dim in dims:
        for kind in ("wishart", "activation-like"):
            losses = reward_losses(synthetic(dim, 1, kind), synthetic(dim, 2, kind), torch.eye(dim, dtype=torch.float64), LOSSY)
            print(f"   d = {dim}, {kind}")
            print_losses(losses)


def print_losses(losses: dict[str, float]) -> None:
    if DEGENERATE[0]:
        print(f"   ({DEGENERATE[0]} cases with R* = 0 at the matrix's scale left out)")
        DEGENERATE[0] = 0
    print("   " + "  ".join(f"{form}: {losses[form]:.1e}" for form in LOSSY) + "   (target <= 1e-5)")
    print("   minor (LoRA-Null): " + "  ".join(f"{form}: {losses['minor ' + form]:.1e}" for form in LOSSY))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--layers-every", type=int, default=3)
    parser.add_argument("--dims", default="1024,4096")
    parser.add_argument("--quick", action="store_true", help="smoke run: 12 samples of 64 tokens, the first block only, d = 256")
    arguments = parser.parse_args()
    targets = None
    if arguments.quick:
        arguments.samples, arguments.max_length, arguments.dims = 12, 64, "256"
        targets = [f"model.layers.0.{name}" for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    print(f"load {os.getloadavg()[0]:.2f}")
    bytes_table()
    with tempfile.TemporaryDirectory() as scratch:
        reference = reference_calibration(arguments.model, arguments.samples, arguments.max_length, Path(scratch) / "reference", targets)
        if targets is None:
            measured(reference, Path(scratch))
        on_model(reference, arguments.layers_every)
        few = reference_calibration(arguments.model, 4, 32, Path(scratch) / "few-tokens", targets)  # fewer tokens than dimensions
        on_model(few, arguments.layers_every)
    on_synthetic([int(d) for d in arguments.dims.split(",")])


if __name__ == "__main__":
    main()
