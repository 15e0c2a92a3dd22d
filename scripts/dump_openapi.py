"""Write the platform API's OpenAPI document to app/openapi.json (commit the result).

    python scripts/dump_openapi.py          # write
    python scripts/dump_openapi.py --check  # exit 1 when the committed file is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.api.openapi import COMMITTED, build_spec


def render() -> str:
    return json.dumps(build_spec(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not COMMITTED.is_file() or COMMITTED.read_text() != text:
            print(f"{COMMITTED} is stale: run python scripts/dump_openapi.py", file=sys.stderr)
            return 1
        return 0
    COMMITTED.write_text(text)
    print(f"wrote {COMMITTED}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
