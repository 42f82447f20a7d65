#!/usr/bin/env python
"""Average two training runs' weights (a "soup"): SHARE * FIRST + (1 - SHARE) * SECOND, tensor by tensor.

    python scripts/research/mix_weights.py runs/train-n25/weights.safetensors runs/train-n40/weights.safetensors \\
        --share 0.3 --out runs/chat

Both must be runs of one writer (same tensors and shapes; best from the same
--seed, so they share a start). Writes OUT/weights.safetensors with both
sources' commands and sha256s in its metadata, and prints the tensors'
digest (companion.training.loop.tensors_digest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("--share", type=float, required=True, help="the first file's share (0..1)")
    p.add_argument("--seed", type=int, default=0, help="unused (nothing is drawn); kept for the scripts' convention")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    from safetensors import safe_open
    from safetensors.torch import save_file

    from companion.training.loop import mix, tensors_digest

    try:
        tensors, meta = [], {}
        for key, path in (("first", args.first), ("second", args.second)):
            with safe_open(str(path), "pt") as f:
                tensors.append({n: f.get_tensor(n) for n in f.keys()})
                meta[f"{key}_command"] = (f.metadata() or {}).get("command", "")
            meta[f"{key}_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        mixed = mix(*tensors, args.share)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    meta["command"] = " ".join(["scripts/research/mix_weights.py", *(argv if argv is not None else sys.argv[1:])])
    save_file(mixed, str(args.out / "weights.safetensors"), metadata=meta)
    print(json.dumps({"tensors_sha256": tensors_digest(mixed), "share": args.share}))
    print(f"wrote {args.out}/weights.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
