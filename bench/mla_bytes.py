#!/usr/bin/env python3
"""Bytes of attention weights one decode step reads per layer, absorbed MLA
(q_b + W_UK + W_UV + o_proj, as moepack stores them) versus W_UK folded into
q_b and W_UV folded into o_proj. int4 = 4 bits + an f16 scale per 128."""


def int4(n, k):
    return n * k / 2 + n * ((k + 127) // 128) * 2


def bf16(n):
    return n * 2


def report(name, hidden, heads, q_lora, kv_lora, nope, rope, v, layers):
    k_in = q_lora or hidden
    q = int4(heads * (nope + rope), k_in)
    q_folded = int4(heads * (kv_lora + rope), k_in)
    uk, uv = bf16(heads * kv_lora * nope), bf16(heads * v * kv_lora)
    o, o_folded = int4(hidden, heads * v), int4(hidden, heads * kv_lora)
    ours, folded = q + uk + uv + o, q_folded + o_folded
    print(f"{name}: absorbed {q/1e6:.1f} (q) + {uk/1e6:.1f} (W_UK) + {uv/1e6:.1f} (W_UV) + {o/1e6:.1f} (o) "
          f"= {ours/1e6:.1f} MB/layer; folded {q_folded/1e6:.1f} + {o_folded/1e6:.1f} = {folded/1e6:.1f} MB/layer "
          f"({folded/ours:.2f}x); {layers} layers: {ours*layers/1e9:.2f} vs {folded*layers/1e9:.2f} GB")


report("DeepSeek-V3", 7168, 128, 1536, 512, 128, 64, 128, 61)
report("DeepSeek-V2-Lite", 2048, 16, 0, 512, 128, 64, 128, 27)
