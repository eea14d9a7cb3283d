#!/usr/bin/env python3
"""Our GGUF exports of the default model (SmolLM2-135M-Instruct) checked with real llama.cpp.

  scripts/llama_cpp/check_exports.py [--types f16,q8_0,...] [--tokens 24] [--ctx 128]

1. scripts/llama_cpp/build.sh builds llama.cpp (llama-cpp-python 0.3.36's) once.
2. `cargo xtask export-gguf` writes the default model as f32 and as each --types entry.
   `llama-quantize` turns our f32 export into each K-quant type too (llama.cpp's own file).
3. For every file: greedy decoding of --tokens tokens from the same prompt by llama.cpp's
   `llama-simple` and by `cargo xtask generate` (texts compared), and perplexity on a text
   (the first records of data/alpaca-eval/valid.jsonl, written to a temp file) by
   `llama-perplexity -c CTX` and by `cargo xtask eval --llama-cpp-ctx CTX` (same chunks, same
   scored half of each chunk). For our K-quant files, the tensors are compared byte for byte
   with llama-quantize's (via llama.cpp's gguf-py).
4. --lora: the committed PEFT adapters (crates/peft/tests/fixtures/{lora_qv,rslora_all_linear})
   over their tiny base model (exported f32 by us) written with `export-gguf --adapter DIR
   --lora`: perplexity with llama.cpp applying the GGUF LoRA at run time (`llama-perplexity
   --lora`, not merged) must equal llama.cpp on our merged export and `cargo xtask eval
   --adapter DIR` (1e-4 relative), and differ from the base; greedy texts of `llama-completion
   --lora`, of llama.cpp on the merged export and of `cargo xtask generate --adapter DIR` must
   be identical.
Prints a table. Environment: XTASK (default `cargo xtask`, e.g. `cargo run -q -p xtask --`
for a dev build), WORK (default a temp dir), LLAMA_CPP_CACHE and PYTHON as for build.sh.
Exit status 1 when a greedy text or a LoRA perplexity differs between llama.cpp and us.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = "The capital of France is"
K_TYPES = {"q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K", "q4_k_s": "Q4_K_S",
           "q5_k_s": "Q5_K_S"}


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", cwd=ROOT, **kw)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(map(shlex.quote, cmd))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def xtask(*args):
    return run(shlex.split(os.environ.get("XTASK", "cargo xtask")) + list(args))


def llama_greedy(bin_dir, model, n):
    r = run([os.path.join(bin_dir, "llama-simple"), "-m", model, "-n", str(n), PROMPT])
    out = r.stdout
    if not out.startswith(PROMPT):
        sys.exit(f"error: llama-simple output does not start with the prompt: {out!r}")
    return out[len(PROMPT):].rstrip("\n")


def our_greedy(model, n):
    out = xtask("generate", "--model", model, "--prompt", PROMPT, "--max-new-tokens", str(n)).stdout
    return out.rstrip("\n")


def llama_ppl(bin_dir, model, text, ctx, extra=()):
    r = run([os.path.join(bin_dir, "llama-perplexity"), "-m", model, "-f", text, "-c", str(ctx),
             "-b", str(ctx), "-t", "2"] + list(extra))
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", r.stdout + r.stderr)
    if not m:
        sys.exit(f"error: no 'Final estimate' in llama-perplexity output:\n{r.stderr[-2000:]}")
    return float(m.group(1))


def our_ppl(model, text, ctx):
    out = xtask("eval", "--model", model, "--data", text, "--llama-cpp-ctx", str(ctx), "--json").stdout
    return json.loads(out.strip().splitlines()[-1])["perplexity"]


def same_tensors(gguf, ours, ref):
    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(ref)
    tb = {t.name: t for t in b.tensors}
    same = 0
    for t in a.tensors:
        u = tb.get(t.name)
        if u is not None and t.tensor_type == u.tensor_type and bytes(t.data.tobytes()) == bytes(u.data.tobytes()):
            same += 1
    return same, len(a.tensors), len(b.tensors)


def llama_completion(bin_dir, model, n, lora=None):
    """Greedy text of `llama-completion` (which can apply a LoRA at run time, unlike
    llama-simple). About half of its runs here lose everything logged after the "generate:"
    line (the text and the timing lines), exit status 0: a race in llama.cpp's asynchronous
    logger at exit (0.3.36; the same file and flags print the text in the other runs). Such a
    run is repeated, up to 20 times; a text that never comes is an error, not an empty text."""
    cmd = [os.path.join(bin_dir, "llama-completion"), "-m", model, "-p", PROMPT, "-n", str(n),
           "--temp", "0", "-no-cnv", "--no-display-prompt", "-t", "2", "--no-warmup"]
    if lora:
        cmd += ["--lora", lora]
    for _ in range(20):
        r = run(cmd, stdin=subprocess.DEVNULL)
        if "common_perf_print" in r.stderr:
            return r.stdout.rstrip("\n")
    sys.exit(f"error: llama-completion never ran to the end: {' '.join(map(shlex.quote, cmd))}")


def check_lora(bin_dir, work, n, ctx):
    """Each committed adapter over the tiny base: perplexity of llama.cpp with the GGUF LoRA
    applied at run time (`llama-perplexity --lora`), of llama.cpp on our merged export, and of
    `cargo xtask eval --adapter` (same chunks); and the greedy texts of the first two against
    `cargo xtask generate --adapter`."""
    base_dir = "crates/llama-model/tests/fixtures/models/mha_untied"
    base = os.path.join(work, "tiny-base-f32.gguf")
    xtask("export-gguf", "--model", base_dir, "--out", base, "--type", "f32", "--overwrite")
    text = os.path.join(work, "lora-text.txt")
    with open(os.path.join(ROOT, "data", "alpaca-eval", "valid.jsonl")) as f:
        recs = [json.loads(l) for l in f if l.strip()][:20]
    with open(text, "w") as f:
        for r in recs:
            f.write(" ".join(str(r.get(k, "")) for k in ("instruction", "input", "output") if r.get(k)) + "\n\n")
    print(f"\nLoRA adapters over the tiny base ({base_dir}); perplexity -c {ctx} on {text}")
    print("| adapter | PPL llama.cpp --lora | PPL llama.cpp merged | PPL ours --adapter | PPL base | "
          "greedy: --lora == ours | greedy: --lora == merged |")
    print("|---|---|---|---|---|---|---|")
    bad = 0
    base_ppl = llama_ppl(bin_dir, base, text, ctx)
    for case in ("lora_qv", "rslora_all_linear"):
        adir = f"crates/peft/tests/fixtures/{case}"
        lora = os.path.join(work, f"{case}.lora.gguf")
        merged = os.path.join(work, f"{case}.merged-f32.gguf")
        xtask("export-gguf", "--model", base_dir, "--adapter", adir, "--lora", "--out", lora, "--overwrite")
        xtask("export-gguf", "--model", base_dir, "--adapter", adir, "--out", merged, "--type", "f32",
              "--overwrite")
        p_lora = llama_ppl(bin_dir, base, text, ctx, ["--lora", lora])
        p_merged = llama_ppl(bin_dir, merged, text, ctx)
        out = xtask("eval", "--model", base_dir, "--adapter", adir, "--data", text,
                    "--llama-cpp-ctx", str(ctx), "--json").stdout
        p_ours = json.loads(out.strip().splitlines()[-1])["perplexity"]
        with_lora = llama_completion(bin_dir, base, n, lora)
        with_merged = llama_completion(bin_dir, merged, n)
        ours = xtask("generate", "--model", base_dir, "--adapter", adir, "--prompt", PROMPT,
                     "--max-new-tokens", str(n)).stdout.rstrip("\n")
        a, b = with_lora == ours, with_lora == with_merged
        # The adapter must change the model, and all three perplexities must agree to 1e-4
        # (relative): f32 everywhere, differences are summation order only.
        close = all(abs(p - p_lora) <= 1e-4 * p_lora for p in (p_merged, p_ours))
        changed = abs(p_lora - base_ppl) > 1e-3 * base_ppl
        bad += (not a) + (not b) + (not close) + (not changed)
        print(f"| {case} | {p_lora:.6f} | {p_merged:.6f} | {p_ours:.6f} | {base_ppl:.6f} | "
              f"{'yes' if a else 'NO'} | {'yes' if b else 'NO'} |")
        if not (a and b):
            print(f"  llama.cpp --lora: {with_lora!r}\n  ours: {ours!r}\n  merged: {with_merged!r}")
        if not changed:
            print("  NO: the adapter does not change llama.cpp's output")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default="f16,q8_0,q4_0,q4_k_m,q5_k_m,q6_k")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--records", type=int, default=40)
    ap.add_argument("--lora-ctx", type=int, default=64, help="perplexity context of the LoRA check (the tiny base was made for 128)")
    ap.add_argument("--lora-only", action="store_true", help="only the LoRA check (step 4)")
    args = ap.parse_args()

    bin_dir = run(["bash", "scripts/llama_cpp/build.sh"]).stdout.strip().splitlines()[-1]
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(bin_dir)),
                                    "llama_cpp_python-0.3.36", "vendor", "llama.cpp", "gguf-py"))
    import gguf  # noqa: E402

    work = os.environ.get("WORK") or tempfile.mkdtemp(prefix="gguf-check-")
    os.makedirs(work, exist_ok=True)
    if args.lora_only:
        sys.exit(1 if check_lora(bin_dir, work, args.tokens, args.lora_ctx) else 0)
    src = xtask("fetch-default").stdout.strip().splitlines()[-1]
    text = os.path.join(work, "text.txt")
    with open(os.path.join(ROOT, "data", "alpaca-eval", "valid.jsonl")) as f:
        recs = [json.loads(l) for l in f if l.strip()][: args.records]
    with open(text, "w") as f:
        for r in recs:
            f.write(" ".join(str(r.get(k, "")) for k in ("instruction", "input", "output") if r.get(k)) + "\n\n")

    files = []  # (label, path, k-quant reference path or None)
    f32 = os.path.join(work, "ours-f32.gguf")
    xtask("export-gguf", "--model", src, "--out", f32, "--type", "f32")
    for ty in args.types.split(","):
        path = os.path.join(work, f"ours-{ty}.gguf")
        xtask("export-gguf", "--model", src, "--out", path, "--type", ty)
        ref = None
        if ty in K_TYPES:
            ref = os.path.join(work, f"llama-quantize-{ty}.gguf")
            run([os.path.join(bin_dir, "llama-quantize"), f32, ref, K_TYPES[ty], "2"])
        files.append((f"ours {ty}", path, ref))
        if ref:
            files.append((f"llama-quantize {ty} (from ours f32)", ref, None))

    print(f"prompt {PROMPT!r}, {args.tokens} greedy tokens; perplexity: {text} "
          f"({args.records} records of data/alpaca-eval/valid.jsonl), -c {args.ctx}")
    print("| file | greedy text identical (llama-simple vs ours) | PPL llama.cpp | PPL ours | tensors equal to llama-quantize's |")
    print("|---|---|---|---|---|")
    bad = 0
    texts = {}
    for label, path, ref in files:
        lt = llama_greedy(bin_dir, path, args.tokens)
        ot = our_greedy(path, args.tokens)
        texts[label] = lt
        same = lt == ot
        bad += not same
        lp = llama_ppl(bin_dir, path, text, args.ctx)
        op = our_ppl(path, text, args.ctx)
        eq = ""
        if ref:
            s, n, m = same_tensors(gguf, path, ref)
            eq = f"{s}/{n}" + ("" if n == m else f" (llama-quantize wrote {m})")
        print(f"| {label} | {'yes' if same else 'NO'} | {lp:.4f} | {op:.4f} | {eq} |", flush=True)
        if not same:
            print(f"  llama.cpp: {lt!r}\n  ours:      {ot!r}")
    print("\ngreedy texts (llama.cpp):")
    for label, t in texts.items():
        print(f"  {label}: {t!r}")
    bad += check_lora(bin_dir, work, args.tokens, args.lora_ctx)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
