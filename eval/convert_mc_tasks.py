#!/usr/bin/env python3
"""Converts public Hugging Face dataset exports to a2sf-eval task files (JSON lines).

Input: a JSON-lines (or JSON array) export of one split, e.g. from
`datasets.load_dataset("allenai/openbookqa", "main")["test"].to_json("obqa.jsonl")`.
Output: one line per question, {"context", "choices", "gold"} (or "choice_contexts" for WinoGrande),
following lm-eval-harness's prompt templates for these tasks.

  python3 eval/convert_mc_tasks.py --task=arc --input=arc_easy_test.jsonl --output=arc_easy.jsonl
  python3 eval/convert_mc_tasks.py --task=piqa --input=piqa_train.jsonl --output=piqa_fewshot.jsonl --fewshot

Tasks: openbookqa, arc (ARC-Easy and ARC-Challenge), piqa, copa, winogrande, mathqa.
Standard library only.
"""
import argparse
import json
import re
import sys


def read_records(path):
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def openbookqa(r):
    labels = r["choices"]["label"]
    return {"context": r["question_stem"], "choices": r["choices"]["text"], "gold": labels.index(r["answerKey"])}


def arc(r):
    labels = r["choices"]["label"]
    return {"context": "Question: " + r["question"] + "\nAnswer:", "choices": r["choices"]["text"],
            "gold": labels.index(r["answerKey"])}


def piqa(r):
    return {"context": "Question: " + r["goal"] + "\nAnswer:", "choices": [r["sol1"], r["sol2"]], "gold": int(r["label"])}


def copa(r):
    connector = {"cause": " because", "effect": " therefore"}[r["question"]]
    premise = r["premise"].strip()
    if premise.endswith("."):
        premise = premise[:-1]

    def lower_first(choice):
        return choice[0].lower() + choice[1:]

    return {"context": premise + connector, "choices": [lower_first(r["choice1"]), lower_first(r["choice2"])],
            "gold": int(r["label"])}


def winogrande(r):
    # lm-eval's partial scoring: the context is the sentence up to the blank with an option filled in;
    # the continuation after the blank is shared and scored.
    sentence = r["sentence"]
    blank = sentence.index("_")
    rest = sentence[blank + 1:].strip()
    contexts = [sentence[:blank] + r["option1"], sentence[:blank] + r["option2"]]
    return {"choice_contexts": contexts, "choices": [rest, rest], "gold": int(r["answer"]) - 1}


def mathqa(r):
    options = [c.strip() for c in re.findall(r"[abcde] \) (.*?)(?:, |$)", r["options"])]
    return {"context": "Question: " + r["Problem"] + "\nAnswer:", "choices": options,
            "gold": "abcde".index(r["correct"])}


CONVERTERS = {"openbookqa": openbookqa, "arc": arc, "piqa": piqa, "copa": copa, "winogrande": winogrande,
              "mathqa": mathqa}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted(CONVERTERS))
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--fewshot", action="store_true", help="mark every line as a demonstration example")
    parser.add_argument("--limit", type=int, default=0, help="convert at most this many records")
    args = parser.parse_args()
    records = read_records(args.input)
    if args.limit:
        records = records[: args.limit]
    written = 0
    with open(args.output, "w", encoding="utf-8") as out:
        for i, record in enumerate(records):
            try:
                line = CONVERTERS[args.task](record)
            except (KeyError, ValueError, IndexError) as error:
                print(f"record {i + 1}: skipped ({error!r})", file=sys.stderr)
                continue
            if args.fewshot:
                line["fewshot"] = True
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += 1
    print(f"wrote {written} questions to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
