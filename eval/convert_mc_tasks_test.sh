#!/usr/bin/env bash
# Converts one sample record of each supported dataset and checks the task lines by hand.
set -euo pipefail
script="$1"
samples="$2"
tmp="${TEST_TMPDIR:-/tmp}/convert"
mkdir -p "$tmp"
for task in openbookqa arc piqa copa winogrande mathqa; do
  python3 -c "import json,sys; print(json.dumps(json.load(open('$samples'))['$task']))" > "$tmp/$task.in.jsonl"
  python3 "$script" --task="$task" --input="$tmp/$task.in.jsonl" --output="$tmp/$task.jsonl" 2>/dev/null
done
check() { python3 -c "import json; d=json.loads(open('$tmp/$1.jsonl').readline()); assert $2, d" || { echo "FAIL: $1"; exit 1; }; }
check openbookqa "d['gold'] == 1 and d['choices'][1] == 'plants sprouting'"
check arc "d['gold'] == 1 and d['context'] == 'Question: Which is a gas?\nAnswer:'"
check piqa "d['gold'] == 0 and len(d['choices']) == 2"
check copa "d['context'] == 'The man broke his toe because' and d['choices'][0] == 'he dropped a hammer on his foot.'"
check winogrande "d['gold'] == 0 and d['choice_contexts'][1].endswith('so Maria') and d['choices'][0] == 'always got the harder cases.'"
check mathqa "d['gold'] == 1 and d['choices'] == ['4', '5', '6', '7', '8']"
echo "all 6 converters passed"
