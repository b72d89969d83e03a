"""Structured-output validity: 50 (JSON schema, prompt) pairs answered by the embedded SmolLM2-135M under
constrained decoding (``grammar=``), greedy; each answer must parse and validate (jsonschema) against its
schema. Also reports the same prompts without constraints (the schema only in the prompt), for contrast.

    python benchmarks/structured_validity.py                          # CPU, 1 thread, 96 new tokens
    python benchmarks/structured_validity.py --json docs/runs/structured_validity_cpu.json
    python benchmarks/structured_validity.py --limit 10 --max-new-tokens 64  # a quick look

Answers are decoded in batches (``generate_batch(grammars=[...])``, one grammar per row).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

S = {"type": "string"}
INT = {"type": "integer"}
N = {"type": "number"}
B = {"type": "boolean"}


def obj(required: dict[str, Any], **optional: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {**required, **optional}, "required": list(required)}


SCHEMAS: dict[str, dict[str, Any]] = {
    "contact": obj({"name": S, "email": S, "phone": S}),
    "event": obj(
        {"title": S, "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}, "attendees": INT}
    ),
    "sentiment": obj({"sentiment": {"enum": ["positive", "negative", "neutral"]}, "confidence": N}),
    "recipe": obj({"dish": S, "ingredients": {"type": "array", "items": S, "minItems": 1}, "minutes": INT}),
    "product": obj(
        {"name": S, "price": {"type": "number", "minimum": 0}, "in_stock": B},
        category={"enum": ["books", "electronics", "food", "clothing"]},
    ),
    "address": obj({"street": S, "city": S, "country": S, "postcode": S}),
    "person": obj({"name": S, "age": {"type": "integer", "minimum": 0, "maximum": 130}, "job": S}),
    "order": obj(
        {
            "order_id": S,
            "items": {
                "type": "array",
                "items": obj({"sku": S, "quantity": {"type": "integer", "minimum": 1}}),
                "minItems": 1,
            },
            "express": B,
        }
    ),
    "weather": obj(
        {"city": S, "temperature_c": N, "conditions": {"enum": ["sunny", "cloudy", "rain", "snow", "storm"]}}
    ),
    "answer": obj({"answer": S, "sources": {"type": "array", "items": S}, "certain": B}),
}
PROMPTS: dict[str, list[str]] = {
    "contact": [
        "Extract the contact: Maria Lopez, maria.lopez@example.com, +34 612 345 678.",
        "Contact card for John Smith (john@smith.org), phone 555-0100.",
        "Our support lead is Aiko Tanaka; write to aiko@tanaka.jp or call 03-1234-5678.",
        "Make up a contact for a plumber in Leeds.",
        "Who should I contact? Dr. Ravi Patel, ravi.patel@hospital.in, 080 2222 3333.",
    ],
    "event": [
        "Team offsite on 2025-06-14 with 12 people. Give the event.",
        "Create an event: the book club meets on 2024-11-02, eight members come.",
        "Sarah's birthday party is on 2025-03-09 and 25 guests are invited.",
        "Schedule a product launch for next spring with about 200 attendees.",
        "The conference 'PyData Berlin' runs on 2025-04-22 for 900 attendees.",
    ],
    "sentiment": [
        "Classify the sentiment: 'I absolutely loved this phone, best purchase ever!'",
        "Sentiment of: 'The delivery was late and the box was crushed.'",
        "What is the sentiment of 'The meeting is at 3 pm.'?",
        "Review: 'Not bad, but the battery could be better.' Give the sentiment.",
        "Tweet: 'worst customer service I have ever dealt with'. Sentiment?",
    ],
    "recipe": [
        "Give me a simple pancake recipe.",
        "A quick tomato pasta for two.",
        "How do I make guacamole?",
        "Recipe for a vegetable soup.",
        "Describe a chocolate chip cookie recipe.",
    ],
    "product": [
        "Catalogue entry: 'The Hobbit' paperback, 9.99 dollars, available.",
        "Wireless headphones at 59.50, currently out of stock.",
        "Add a product: organic apples, 3.20 per kilo, in stock.",
        "Describe a winter jacket that costs 120 and is in stock.",
        "A USB-C charger priced at 19 dollars; sold out.",
    ],
    "address": [
        "Parse the address: 10 Downing Street, London SW1A 2AA, United Kingdom.",
        "Address: 1600 Amphitheatre Parkway, Mountain View, CA 94043, USA.",
        "Ship to Rue de Rivoli 99, 75001 Paris, France.",
        "Write the address of the Brandenburg Gate in Berlin.",
        "My address is 221B Baker Street, London NW1 6XE, UK.",
    ],
    "person": [
        "Alice is a 34-year-old software engineer. Give her record.",
        "Extract the person: Tom, 67, retired teacher.",
        "Create a fictional character who is a young doctor.",
        "My grandfather Luis is 88 and was a carpenter.",
        "Describe the person: Priya, a 29 year old data scientist.",
    ],
    "order": [
        "Order A-1001: two of SKU-42 and one SKU-7, express shipping.",
        "Create an order for three notebooks (sku NB-3), standard delivery.",
        "Customer ordered 5 x TSHIRT-M and 1 x CAP-01, id 99812, needs it fast.",
        "Order 555: one laptop, sku LPT-15, not express.",
        "Make an example order with two different items.",
    ],
    "weather": [
        "It is 21 degrees and sunny in Madrid. Give the weather.",
        "Weather report: Oslo, minus 4, snowing.",
        "In London it's 12 C with clouds.",
        "Tokyo: 30 degrees, thunderstorm warning.",
        "Describe typical weather in Seattle in November.",
    ],
    "answer": [
        "What is the capital of France? Cite your sources.",
        "Who wrote 'Pride and Prejudice'?",
        "How many legs does a spider have?",
        "What is the boiling point of water at sea level?",
        "Which planet is known as the red planet?",
    ],
}


def cases() -> list[tuple[str, dict[str, Any], str]]:
    return [(name, SCHEMAS[name], prompt) for name in SCHEMAS for prompt in PROMPTS[name]]


def check(text: str, schema: dict[str, Any]) -> tuple[bool, bool]:
    """(parses as JSON, valid under the schema)."""
    import jsonschema

    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False, False
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return True, False
    return True, True


def run(lift: Any, pairs: list[tuple[str, dict[str, Any], str]], max_new: int, constrained: bool) -> dict:
    from lift_integrations.structured import Grammar, prepare_structured

    turns, grammars = [], []
    for _, schema, prompt in pairs:
        messages, _ = prepare_structured([{"role": "user", "content": prompt}], schema)
        turns.append(messages)
        grammars.append(Grammar.from_json_schema(schema) if constrained else None)
    started = time.perf_counter()
    results = lift.generate_batch(turns, grammars=grammars, max_new_tokens=max_new, batch_size=10)
    seconds = time.perf_counter() - started
    rows = []
    for (name, schema, prompt), result in zip(pairs, results, strict=True):
        parses, valid = check(result.text, schema)
        rows.append(
            {
                "schema": name,
                "prompt": prompt,
                "answer": result.text,
                "parses": parses,
                "valid": valid,
                "finish_reason": result.finish_reason,
                "output_tokens": result.output_tokens,
            }
        )
    valid = sum(r["valid"] for r in rows)
    return {
        "constrained": constrained,
        "cases": len(rows),
        "parses": sum(r["parses"] for r in rows),
        "valid": valid,
        "validity_rate": valid / len(rows),
        "output_tokens": sum(r["output_tokens"] for r in rows),
        "mean_output_tokens": sum(r["output_tokens"] for r in rows) / len(rows),
        "seconds": round(seconds, 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true", help="skip the unconstrained run")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args()

    import torch

    from lift_integrations import LIFTModel

    torch.set_num_threads(args.threads)
    lift = LIFTModel.from_pretrained(device="cpu")
    pairs = cases()[: args.limit]
    runs = [run(lift, pairs, args.max_new_tokens, constrained=True)]
    if not args.no_baseline:
        runs.append(run(lift, pairs, args.max_new_tokens, constrained=False))
    report = {
        "model": lift.name,
        "device": "cpu",
        "threads": args.threads,
        "decoding": "greedy",
        "max_new_tokens": args.max_new_tokens,
        "machine": platform.processor() or platform.machine(),
        "command": "python benchmarks/structured_validity.py " + " ".join(sys.argv[1:]),
        "runs": runs,
    }
    for result in runs:
        label = "constrained  " if result["constrained"] else "unconstrained"
        print(
            f"{label}: {result['valid']}/{result['cases']} valid ({100 * result['validity_rate']:.0f}%), "
            f"{result['parses']} parse, {result['mean_output_tokens']:.1f} tokens per answer, "
            f"{result['seconds']} s"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
