"""PyTorch + PEFT side of `cargo xtask bench-train`: the same random-weight model shape, random
tokens, LoRA on all linear layers (dropout 0), AdamW, one optimizer step per batch; prints one JSON
object with the median step time (first step excluded) and the peak RSS of the process.

    ~/venv/bin/python scripts/bench/bench_train_torch.py --shape issue-tiny --seq-len 256 --batch 8
    ~/venv/bin/python scripts/bench/bench_train_torch.py --shape llama3.2-1b --method qlora --seq-len 256 --batch 1

Versions: see scripts/fixtures/requirements-peft.txt (torch 2.9.1, transformers 5.23.0, peft 0.21.2);
QLoRA needs bitsandbytes 0.50.2 (CPU 4-bit matmul). Threads: torch's default (all cores).
"""
import argparse
import json
import resource
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "issue-tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                       intermediate_size=688, vocab_size=32000, tie_word_embeddings=False),
    "llama3.2-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                        intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="issue-tiny", choices=SHAPES)
    ap.add_argument("--method", default="lora", choices=["lora", "qlora"])
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(max_position_embeddings=2048, attn_implementation="eager", **SHAPES[args.shape])
    model = LlamaForCausalLM(cfg)
    model.init_weights()
    if args.method == "qlora":
        import bitsandbytes as bnb
        # Every linear layer but the LM head becomes an NF4 + double-quant Linear4bit (what
        # from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...)) builds).
        for name, mod in list(model.named_modules()):
            for child_name, child in list(mod.named_children()):
                if isinstance(child, torch.nn.Linear) and child_name != "lm_head":
                    q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4")
                    q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                                 quant_type="nf4")._quantize("cpu")
                    setattr(mod, child_name, q)
    lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear", lora_dropout=0.0)
    model = get_peft_model(model, lora)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    times, losses = [], []
    for step in range(args.steps):
        ids = (torch.arange(args.batch * args.seq_len) * 7919 + step * 104729) % cfg.vocab_size
        ids = ids.reshape(args.batch, args.seq_len)
        t = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
        times.append(time.perf_counter() - t)
    rest = sorted(times[1:])
    median = rest[len(rest) // 2]
    print(json.dumps({
        "shape": args.shape, "method": args.method, "seq_len": args.seq_len, "batch": args.batch,
        "rank": args.rank, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "step_s_median": median, "step_s": times, "tokens_per_s": args.batch * args.seq_len / median,
        "losses": losses, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
