"""List or add rate cards (cards are immutable data, versioned by the date they take effect).

    python -m ops.rate_cards list
    python -m ops.rate_cards add [--effective-from 2027-01-01] --tokens-per-minute 1200 \\
        --cents-per-minute 12.5 [--basis tokens|call-duration] [--id card-2027] --by ops@example.com

The project comes from SIMPLYTALK_PROJECT / GOOGLE_CLOUD_PROJECT (the emulators for a demo- project).
"""

from __future__ import annotations

import argparse
import json
import sys

from simplytalk.errors import ApiError
from simplytalk.services.billing_deps import firestore_billing
from simplytalk.services.rate_cards import RateCardInput, add_card, card_json
from simplytalk.validation import parse_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    add = sub.add_parser("add")
    add.add_argument("--effective-from", default=None, help="YYYY-MM-01 (default: next month)")
    add.add_argument("--tokens-per-minute", required=True, type=int)
    add.add_argument("--cents-per-minute", required=True, help="a decimal string, e.g. 45 or 12.5")
    add.add_argument("--basis", default="tokens", choices=["tokens", "call-duration"])
    add.add_argument("--id", default=None)
    add.add_argument("--by", required=True, help="who adds it (recorded on the card)")
    args = parser.parse_args(argv)
    billing = firestore_billing()
    if args.command == "list":
        for card in billing.rate_cards.list():
            print(json.dumps(card_json(card)))
        return 0
    try:
        data = parse_model(RateCardInput, {
            "id": args.id, "effectiveFrom": args.effective_from, "tokensPerMinute": args.tokens_per_minute,
            "centsPerMinute": args.cents_per_minute, "openaiBasis": args.basis})
        card = add_card(billing.rate_cards, data, f"cli:{args.by}", billing.clock())
    except ApiError as exc:
        print(f"refused: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(card_json(card)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
