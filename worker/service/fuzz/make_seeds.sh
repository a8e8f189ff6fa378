#!/usr/bin/env bash
# Writes the seed inputs of the Generate fuzzer into corpus/ (run from anywhere; needs protoc).
# An input is one selector byte (odd: the policy runs in the in-process cache manager, even: in the
# worker) followed by a serialized a2sf.v1.GenerateRequest.
set -euo pipefail
cd "$(dirname "$0")"
root=../../..
seed() {  # seed NAME SELECTOR TEXT-PROTO
  { printf "\\x$2"; protoc -I"$root/proto" --encode=a2sf.v1.GenerateRequest a2sf/v1/generation.proto <<<"$3"; } \
    > "corpus/seed-$1"
}
seed text-local 00 'text: "Once upon a time" max_tokens: 8'
seed text-remote 01 'text: "Once upon a time" max_tokens: 8 policy { name: "a2sf" alpha: 0.3 } budget { tokens: 4 }'
seed ids-h2o 01 'token_ids { ids: [1, 300, 301, 302] } max_tokens: 6 policy { name: "h2o" } budget { tokens: 3 }'
seed bulk 01 'text: "Lily went" max_tokens: 5 prefill: PREFILL_MODE_BULK budget { ratio: 0.5 }'
seed sampling 00 'text: "Tom" max_tokens: 6 sampling { temperature: 0.8 top_p: 0.9 seed: 5 } stop { stop_on_eos: false }'
seed tiny-temperature 00 'text: "Tom" max_tokens: 6 sampling { temperature: 1e-40 }'
seed empty-text 00 'text: "" max_tokens: 4'
seed unknown-prefill 00 'text: "a" max_tokens: 4 prefill: 99'
seed over-context 00 'text: "a" max_tokens: 4000'
seed streaming 01 'text: "The dog" max_tokens: 10 policy { name: "streaming_llm" sinks: 1 } budget { tokens: 4 }'
seed layer-alphas 01 'text: "The cat" max_tokens: 6 policy { name: "a2sf" layer_alphas: [0.1, 0.9] } budget { tokens: 3 }'
seed job-id 00 'job_id: "mine" text: "x" max_tokens: 2'
echo "seeds written: $(ls corpus | wc -l) files in corpus/"
