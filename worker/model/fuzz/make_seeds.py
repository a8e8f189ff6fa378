#!/usr/bin/env python3
"""Writes the seed inputs of the loader fuzzer into corpus/ (see loader_fuzz_target.h for the format).

Valid seeds are tiny models of the fuzz config (dim 8, hidden 16, 2 layers, 2 heads, 1 KV head,
vocab 16, context 8) in both formats; the rest are classic breakages: truncations, a wrong header,
a shape mismatch, an unsupported dtype, overlapping data offsets.
"""
import json
import os
import struct
import sys

DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB, SEQ = 8, 16, 2, 2, 1, 16, 8
HEAD_DIM = DIM // HEADS
KV_DIM = KV_HEADS * HEAD_DIM
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(out, exist_ok=True)


def floats(n, seed):
    return struct.pack("<%df" % n, *[((i * 37 + seed * 11) % 19 - 9) / 40.0 for i in range(n)])


def llama2c(shared=False):
    header = struct.pack("<7i", DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB if shared else -VOCAB, SEQ)
    parts = [floats(VOCAB * DIM, 1), floats(LAYERS * DIM, 2), floats(LAYERS * DIM * DIM, 3),
             floats(LAYERS * KV_DIM * DIM, 4), floats(LAYERS * KV_DIM * DIM, 5), floats(LAYERS * DIM * DIM, 6),
             floats(LAYERS * DIM, 7), floats(LAYERS * HIDDEN * DIM, 8), floats(LAYERS * DIM * HIDDEN, 9),
             floats(LAYERS * HIDDEN * DIM, 10), floats(DIM, 11), floats(SEQ * HEAD_DIM, 12)]
    if not shared:
        parts.append(floats(VOCAB * DIM, 13))
    return header + b"".join(parts)


def safetensors(dtype="F32", tweak=None):
    tensors = [("model.embed_tokens.weight", [VOCAB, DIM]), ("model.norm.weight", [DIM]),
               ("lm_head.weight", [VOCAB, DIM])]
    for l in range(LAYERS):
        p = "model.layers.%d." % l
        tensors += [(p + "input_layernorm.weight", [DIM]), (p + "post_attention_layernorm.weight", [DIM]),
                    (p + "self_attn.q_proj.weight", [DIM, DIM]), (p + "self_attn.k_proj.weight", [KV_DIM, DIM]),
                    (p + "self_attn.v_proj.weight", [KV_DIM, DIM]), (p + "self_attn.o_proj.weight", [DIM, DIM]),
                    (p + "mlp.gate_proj.weight", [HIDDEN, DIM]), (p + "mlp.up_proj.weight", [HIDDEN, DIM]),
                    (p + "mlp.down_proj.weight", [DIM, HIDDEN])]
    size = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1}[dtype]
    header, data, offset = {"__metadata__": {"format": "pt"}}, b"", 0
    for i, (name, shape) in enumerate(tensors):
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n * size]}
        data += (floats(n, i) if dtype == "F32" else bytes((i + j) % 60 for j in range(n * size)))
        offset += n * size
    if tweak:
        tweak(header)
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


def write(name, kind, body):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([kind]) + body)


valid_bin, valid_st = llama2c(), safetensors()
write("seed-valid-llama2c", 0, valid_bin)
write("seed-valid-llama2c-shared", 0, llama2c(shared=True))
write("seed-valid-safetensors", 1, valid_st)
write("seed-valid-safetensors-f16", 1, safetensors("F16"))
write("seed-valid-safetensors-bf16", 1, safetensors("BF16"))
write("seed-bin-truncated-header", 0, valid_bin[:20])
write("seed-bin-truncated-weights", 0, valid_bin[: len(valid_bin) // 2])
write("seed-bin-negative-dims", 0, struct.pack("<7i", -8, 16, 2, 2, 1, 16, 8) + valid_bin[28:])
write("seed-bin-huge-dims", 0, struct.pack("<7i", 1 << 30, 1 << 30, 1000, 2, 1, 16, 8) + valid_bin[28:])
write("seed-bin-v2-magic", 0, b"ak42" + struct.pack("<i", 2) + valid_bin[28:200])
write("seed-st-truncated", 1, valid_st[: len(valid_st) - 100])
write("seed-st-header-too-long", 1, struct.pack("<Q", 1 << 40) + valid_st[8:100])
write("seed-st-int8", 1, safetensors("I8"))
write("seed-st-wrong-shape", 1, safetensors(tweak=lambda h: h["model.norm.weight"].update(shape=[DIM + 1])))
write("seed-st-overlapping", 1, safetensors(tweak=lambda h: h["model.norm.weight"].update(data_offsets=[0, 4 * DIM])))
write("seed-st-missing-tensor", 1, safetensors(tweak=lambda h: h.pop("lm_head.weight")))
write("seed-st-not-json", 1, struct.pack("<Q", 10) + b"{not json!" + b"\0" * 64)
print("wrote seeds to", out, file=sys.stderr)
