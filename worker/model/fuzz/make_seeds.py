#!/usr/bin/env python3
"""Writes the seed inputs of the loader fuzzer into corpus/ (see loader_fuzz_target.h for the format).

Valid seeds are tiny models of the fuzz config (dim 8, hidden 16, 2 layers, 2 heads, 1 KV head,
vocab 16, context 8) in the llama2.c and safetensors formats, and tiny GGUF models (f32/f16/bf16 of
that shape; q8_0/q4_0 at dim 32, whose rows are whole blocks) with a tokenizer; the rest are classic
breakages: truncations, a wrong header, a shape mismatch, an unsupported dtype, overlapping data
offsets, and for GGUF a wrong architecture, a k-quant type, a missing tensor, a bad alignment, an
absurd count, a misaligned offset and inconsistent tokenizer arrays.
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


# --- GGUF (see worker/model/gguf.h for the layout) ---
GGUF_TYPES = {"f32": (0, 1, 4), "f16": (1, 1, 2), "bf16": (30, 1, 2), "q8_0": (8, 32, 34), "q4_0": (2, 32, 18)}


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gkv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload


def gguf_tokenizer(vocab):
    pieces = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in (0x41, 0xE6)] + \
             ["\u2581", "O", "n", "c", "e", "\u2581O", "nc", "\u2581On", "a", "t", "i"]
    pieces = pieces[:vocab]
    types = [2, 3, 3, 6, 6] + [1] * (len(pieces) - 5)
    arr = lambda t, items: struct.pack("<IQ", t, len(items)) + b"".join(items)
    return [gkv("tokenizer.ggml.model", 8, gstr("llama")),
            gkv("tokenizer.ggml.tokens", 9, arr(8, [gstr(p) for p in pieces])),
            gkv("tokenizer.ggml.scores", 9, arr(6, [struct.pack("<f", -i) for i in range(len(pieces))])),
            gkv("tokenizer.ggml.token_type", 9, arr(5, [struct.pack("<i", t) for t in types])),
            gkv("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 1)),
            gkv("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 2))]


def gguf(wtype="f32", dim=DIM, hidden=HIDDEN, layers=LAYERS, tied=True, arch="llama", align=32, tweak_kv=None,
         tweak_tensors=None, tokenizer=True):
    heads, kv_heads = 2, 1
    head_dim = dim // heads
    kv = [gkv("general.architecture", 8, gstr(arch)), gkv("general.alignment", 4, struct.pack("<I", align)),
          gkv("llama.context_length", 4, struct.pack("<I", SEQ)), gkv("llama.embedding_length", 4, struct.pack("<I", dim)),
          gkv("llama.block_count", 4, struct.pack("<I", layers)),
          gkv("llama.feed_forward_length", 4, struct.pack("<I", hidden)),
          gkv("llama.attention.head_count", 4, struct.pack("<I", heads)),
          gkv("llama.attention.head_count_kv", 4, struct.pack("<I", kv_heads)),
          gkv("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)),
          gkv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0))]
    if tokenizer:
        kv += gguf_tokenizer(VOCAB)
    if tweak_kv:
        kv = tweak_kv(kv)
    tensors = [("token_embd.weight", [dim, VOCAB], wtype), ("output_norm.weight", [dim], "f32")]
    if not tied:
        tensors.append(("output.weight", [dim, VOCAB], wtype))
    for l in range(layers):
        p = "blk.%d." % l
        tensors += [(p + "attn_norm.weight", [dim], "f32"), (p + "ffn_norm.weight", [dim], "f32"),
                    (p + "attn_q.weight", [dim, dim], wtype), (p + "attn_k.weight", [dim, kv_heads * head_dim], wtype),
                    (p + "attn_v.weight", [dim, kv_heads * head_dim], wtype),
                    (p + "attn_output.weight", [dim, dim], wtype), (p + "ffn_gate.weight", [dim, hidden], wtype),
                    (p + "ffn_up.weight", [dim, hidden], wtype), (p + "ffn_down.weight", [hidden, dim], wtype)]
    if tweak_tensors:
        tensors = tweak_tensors(tensors)
    infos, data = b"", b""
    for i, (name, dims, t) in enumerate(tensors):
        type_id, block, block_bytes = GGUF_TYPES.get(t, (t, 1, 4)) if isinstance(t, str) else (t, 32, 144)
        n = 1
        for d in dims:
            n *= d
        nbytes = n // block * block_bytes
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", type_id, len(data))
        if t == "f32":
            data += floats(n, i)
        elif t in ("q8_0", "q4_0"):
            data += b"".join(struct.pack("<e", 0.01) + bytes((i + j * 7) % 251 for j in range(block_bytes - 2))
                             for _ in range(n // block))
        else:
            data += bytes((i + j) % 60 for j in range(nbytes))
        data += b"\0" * (-len(data) % align)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv) + infos
    return head + b"\0" * (-len(head) % align) + data


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
valid_gguf = gguf()
write("seed-valid-gguf-f32", 0, valid_gguf)
write("seed-valid-gguf-f16-untied", 0, gguf("f16", tied=False))
write("seed-valid-gguf-bf16", 0, gguf("bf16"))
write("seed-valid-gguf-q8_0", 0, gguf("q8_0", dim=32, hidden=32, layers=1))
write("seed-valid-gguf-q4_0", 0, gguf("q4_0", dim=32, hidden=32, layers=1, tied=False))
write("seed-gguf-truncated", 0, valid_gguf[: len(valid_gguf) - 40])
write("seed-gguf-truncated-header", 0, valid_gguf[:300])
write("seed-gguf-wrong-arch", 0, gguf(arch="gpt2"))
write("seed-gguf-q4_K", 0, gguf(tweak_tensors=lambda ts: [(n, d, 12 if n == "blk.1.ffn_up.weight" else t) for n, d, t in ts]))
write("seed-gguf-missing-tensor", 0, gguf(tweak_tensors=lambda ts: [x for x in ts if x[0] != "blk.0.attn_v.weight"]))
write("seed-gguf-wrong-shape", 0, gguf(tweak_tensors=lambda ts: [(n, [DIM + 2] if n == "output_norm.weight" else d, t) for n, d, t in ts]))
write("seed-gguf-bad-alignment", 0, gguf(align=24))
write("seed-gguf-huge-count", 0, valid_gguf[:8] + struct.pack("<Q", 1 << 60) + valid_gguf[16:])
def misaligned(blob, name=b"output_norm.weight"):
    at = blob.index(name) + len(name) + 4 + 8 + 4  # past n_dims, its one dim and the type: the offset
    offset = struct.unpack_from("<Q", blob, at)[0]
    return blob[:at] + struct.pack("<Q", offset + 4) + blob[at + 8:]


write("seed-gguf-misaligned-offset", 0, misaligned(valid_gguf))
write("seed-gguf-bad-tokenizer", 0, gguf(tweak_kv=lambda kv: [x for x in kv if b"tokenizer.ggml.scores" not in x] +
                                          [gkv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 1) + struct.pack("<f", 0))]))
write("seed-gguf-no-tokenizer", 0, gguf(tokenizer=False))
print("wrote seeds to", out, file=sys.stderr)
