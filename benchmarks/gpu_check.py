"""GPU check: the paper preset's code paths, with tiny random components in the real layouts.

What it runs, on ``--device`` (default cuda) in ``--precision`` (default bf16), in a temporary
folder (or ``--work``):

1. writes tiny random components where the paper preset reads its real ones: a BLIP-2 image-text
   retrieval checkpoint in the transformers layout (ViT + Q-Former), a Llama causal LM with its
   tokenizer (Vicuna's layout; LoRA on top), and a Stable Diffusion folder (``vae/``, ``unet/``,
   diffusers layout); builds the paper preset on them (``UniFashionConfig.from_preset("paper",
   overrides)``) and saves it;
2. writes a FashionGen h5 file and a Fashion-IQ root in their layouts;
3. ``unifashion train --data fashiongen:...@0.7,fashioniq:...@0.3`` with every phase: phase 1 Q-Former
   stage, phase 1 generators stage (ITG through the LoRA LLM, q2I through the UNet), phase 2 on
   the Fashion-IQ triplets; the first run stops after 2 of the Q-Former stage's 4 steps and a second
   run resumes it from its checkpoint (and must say so);
4. ``unifashion eval --data fashioniq:...`` (CMR + CIR with caption fusion and the ITM re-rank);
5. a text-to-image generation (PNDM, 5 steps) and a caption, under autocast.

Prints one JSON line per step and writes ``gpu_check.json`` (``gpu_check_cpu.json`` for
``--device cpu``, so that a CPU run never takes the GPU result's name) to ``--out`` (default
benchmarks/results/). Exit status 0 only when every step passed. ``--device cpu`` runs the same
code paths on the CPU (bf16 autocast included), which is what the test suite can do without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "models")]  # the tests' layout writers


def write_components(root: Path) -> dict:
    """Tiny random BLIP-2 / Llama / Stable Diffusion folders; the paper preset's overrides for them."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    torch.manual_seed(0)
    vision = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   encoder_hidden_size=24, use_qformer_text_input=True, cross_attention_frequency=2)
    blip2 = Blip2ForImageTextRetrieval(Blip2Config(vision_config=vision, qformer_config=qformer, num_query_tokens=4,
                                                   image_text_hidden_size=16))
    with torch.no_grad():  # transformers' own init leaves this tiny model's weights near zero
        for parameter in blip2.parameters():
            if parameter.ndim >= 2:
                parameter.normal_(0.0, 0.02)
    blip2.save_pretrained(root / "blip2-itm")
    from test_caption_lm import write_tiny_llama_checkpoint

    write_tiny_llama_checkpoint(root / "llama")
    sd = root / "stable-diffusion"
    AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=8, sample_size=32).save_pretrained(sd / "vae")
    UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                         attention_head_dim=4, norm_num_groups=8).save_pretrained(sd / "unet")
    return {
        "vision.path": str(root / "blip2-itm"), "vision.hf_config": {"model_type": "blip_2_vision_model", **vision},
        "vision.image_size": 32,
        "qformer.init_path": str(root / "blip2-itm"), "qformer.hidden_size": 32, "qformer.intermediate_size": 64,
        "qformer.num_hidden_layers": 2, "qformer.num_attention_heads": 4, "qformer.num_query_tokens": 4,
        "qformer.max_position_embeddings": 64,
        "embed_dim": 16, "max_text_length": 24,
        "caption_lm.pretrained_path": str(root / "llama"), "caption_lm.lora_r": 4, "caption_lm.lora_alpha": 8,
        "caption_lm.max_caption_tokens": 12,
        "diffusion.pretrained_path": str(sd), "diffusion.image_size": 32, "diffusion.image_width": 24,
    }


def recipe(model: Path, stop_after: int | None) -> dict:
    def stage(name, phase, stage=None, steps=3, stop=None):
        return {"name": name, "phase": phase, "stage": stage,
                "loop": {"steps": steps, "batch_size": 4, "checkpoint_every": 2, "stop_after": stop,
                         "gradient_accumulation": 2, "optim": {"lr": 1e-4, "warmup_steps": 1}}}
    return {"model": str(model), "stages": [stage("phase1-qformer", 1, "qformer", steps=4, stop=stop_after),
                                            stage("phase1-generators", 1, "generators"),
                                            stage("phase2", 2)]}


def run_cli(argv: list[str]) -> tuple[int, str]:
    from unifashion.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    return status, err.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--precision", default="bf16", choices=["no", "bf16", "fp16"])
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    import torch

    from dataset_layouts import write_fashion_iq, write_fashiongen_h5
    from unifashion.models import UniFashion, UniFashionConfig

    report: dict = {"device": args.device, "precision": args.precision, "torch": torch.__version__,
                    "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "steps": {}}
    tmp = tempfile.TemporaryDirectory(prefix="unifashion-gpu-check-")
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    flags = ["--device", args.device, "--precision", args.precision]

    def step(name, fn):
        started = time.perf_counter()
        try:
            detail = fn() or {}
            report["steps"][name] = {"ok": True, "seconds": round(time.perf_counter() - started, 2), **detail}
        except Exception as exc:  # noqa: BLE001 - the report names every failure
            report["steps"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                     "traceback": traceback.format_exc()[-3000:]}
        print(json.dumps({name: report["steps"][name]}), flush=True)
        return report["steps"][name]["ok"]

    def build():
        config = UniFashionConfig.from_preset("paper", write_components(work / "components"))
        model = UniFashion.from_config(config)
        model.save_pretrained(work / "model")
        return {"parameters": sum(p.numel() for p in model.parameters()),
                "lora": any("lora_" in n for n, _ in model.named_parameters())}

    def data():
        write_fashiongen_h5(work / "fashiongen" / "fashiongen_256_256_train.h5", n=16)
        write_fashiongen_h5(work / "fashiongen" / "fashiongen_256_256_validation.h5", n=16, seed=1)
        write_fashion_iq(work / "fashion-iq", n=12)

    spec = f"fashiongen:{work / 'fashiongen'}@0.7,fashioniq:{work / 'fashion-iq'}@0.3"

    def train_and_resume():
        (work / "recipe-stop.json").write_text(json.dumps(recipe(work / "model", stop_after=2)))
        (work / "recipe.json").write_text(json.dumps(recipe(work / "model", stop_after=None)))
        run = work / "run"
        base = ["train", "--data", spec, "--output-dir", str(run), *flags]
        status, _ = run_cli([*base, "--recipe", str(work / "recipe-stop.json")])
        assert status == 0, "the interrupted run failed"
        assert not (run / "phase1-qformer" / "final").exists(), "the stopped stage must not be final"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status, _ = run_cli([*base, "--recipe", str(work / "recipe.json")])
        assert status == 0, "the resumed run failed"
        assert "resumed from" in out.getvalue() and "step 2" in out.getvalue(), "the second run did not resume"
        timings = json.loads((run / "timings.json").read_text())
        assert set(timings) == {"phase1-qformer", "phase1-generators", "phase2"}
        return {"timings": timings}

    def evaluate():
        status, err = run_cli(["eval", "--model", str(work / "run" / "phase2" / "final"), "--data",
                               f"fashioniq:{work / 'fashion-iq'}", "--tasks", "cmr", "cir", "--itm-rerank", "5",
                               "--out", str(work / "eval"), *flags])
        assert status == 0, err[-2000:]
        rows = json.loads((work / "eval" / "results.json").read_text())
        return {"rows": len(rows), "methods": sorted({r["method"] for r in rows})}

    def generate():
        device = torch.device(args.device)
        model = UniFashion.from_pretrained(str(work / "run" / "phase2" / "final")).to(device).eval()
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if args.precision == "bf16" else torch.float16)
                    if args.precision != "no" else contextlib.nullcontext())
        with autocast:
            images = model.generate(["a red dress"], num_inference_steps=5,  # a smoke test: few steps
                                    generator=torch.Generator(device).manual_seed(0))
            caption = model.caption(torch.rand(1, 3, 32, 32, device=device), style="short", max_new_tokens=6)
        assert images.shape[0] == 1 and torch.isfinite(images).all()
        model.processor.postprocess_images(images.float().cpu())[0].save(work / "generated.png")
        return {"image": list(images.shape), "caption": caption[0]}

    ok = step("build paper preset", build) and step("write datasets", data)
    ok = ok and step("train every phase + resume", train_and_resume)
    ok = ok and step("evaluate", evaluate)
    ok = ok and step("generate + caption", generate)
    report["passed"] = bool(ok)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check.json" if args.device == "cuda" else f"gpu_check_{args.device}.json"
    (out / name).write_text(json.dumps(report, indent=2))
    print(json.dumps({"passed": report["passed"]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
