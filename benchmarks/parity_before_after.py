"""Are `mspn keypoints --boxes` and `mspn eval-coco --dets` byte-identical before and after a change?

    python benchmarks/parity_before_after.py 4d9dbb6
    python benchmarks/parity_before_after.py 4d9dbb6 --ignore-key path \
        --patch-before benchmarks/patches/float_parity_on_4d9dbb6.patch
    python benchmarks/parity_before_after.py 4d9dbb6 --data ../shared/data/coco_sample --backend onnxruntime

Checks REVISION out into a temporary git worktree, then runs both commands with the
old code (that worktree's src/ first on PYTHONPATH) and with the new code (this
checkout's src/, or --after REV checked out the same way), on the same images, boxes,
weights and backend, each side with its own fresh MSPN_HOME (so no exported graph is
shared between the two versions). Prints, for each JSON output, whether the two files
are byte-identical and, when they are not, what differs (record count, keys, the
largest keypoint and score differences). Exit code 0 when every output is identical,
1 otherwise.

--ignore-key KEY sets a record field aside that a change added on purpose (records
gained "path" in the redesign, as issue 15 asked): both sides' records are then
written again without it, in the same JSON form, and those texts compared.
--patch-before FILE applies a patch to the old side first: a later change that moved
results on purpose, ported onto the old layout, so that what is left to compare is the
rest. benchmarks/patches/float_parity_on_4d9dbb6.patch is issue 15 item 15 (the official
float arithmetic of extend_box, crop_affine and the decoder, commit 938eb15) on the
layout of 4d9dbb6, the code before the redesign.

Default data: the COCO sample vendored in tests/data/coco_sample. Default weights: the
seeded random MSPN weights of the test suite (.mspn_test_cache), generated when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "tests" / "data" / "coco_sample"
DEFAULT_WEIGHTS = REPO / ".mspn_test_cache" / "mspn_4stage_random_seed0.pkl"


def seeded_weights(path: Path) -> Path:
    """The test suite's seeded random MSPN weights (official pickle format), made once."""
    if path.exists():
        return path
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "src"))
    from mspn_cli.models import build_model
    from tests.weightgen import random_state_dict, write_official_pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    write_official_pickle(random_state_dict(build_model("mspn_4stage"), seed=0), tmp)
    tmp.replace(path)
    return path


def images_with_boxes(data: Path, dets: Path, ann: Path) -> List[Path]:
    """The sample images the boxes file names (an image without boxes is handled differently by design)."""
    names = {image["id"]: image["file_name"] for image in json.loads(ann.read_text())["images"]}
    ids = sorted({entry["image_id"] for entry in json.loads(dets.read_text())} & set(names))
    return [data / names[image_id] for image_id in ids]


def run_side(label: str, src: Path, out: Path, args: argparse.Namespace, images: List[Path]) -> Dict[str, Path]:
    """Both commands with the code in `src`; returns {output name: file}."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(src), MSPN_HOME=str(out / "mspn_home"), COLUMNS="200")
    common = ["--weights", str(args.weights), "--backend", args.backend]
    outputs = {"keypoints --boxes": out / "keypoints.json", "eval-coco --dets": out / "eval_results.json"}
    commands = {
        "keypoints --boxes": ["keypoints", *map(str, images), "--boxes", str(args.dets), "--json",
                              str(outputs["keypoints --boxes"]), *common, "--quiet"],
        "eval-coco --dets": ["eval-coco", "--dets", str(args.dets), "--ann", str(args.ann), "--images", str(args.data),
                             "--results", str(outputs["eval-coco --dets"]), *common, "--quiet"],
    }
    for name, command in commands.items():
        print(f"[{label}] mspn {name} ...", flush=True)
        proc = subprocess.run([sys.executable, "-m", "mspn_cli", *command], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
            print(f"[{label}] mspn {name} exited {proc.returncode}: {tail[0]}")
    return outputs


def describe_difference(old_path: Path, new_path: Path) -> str:
    if not old_path.exists() or not new_path.exists():
        return f"missing output ({'old' if not old_path.exists() else 'new'})"
    old, new = json.loads(old_path.read_text()), json.loads(new_path.read_text())
    if len(old) != len(new):
        return f"{len(old)} records before, {len(new)} after"
    notes = []
    old_keys = set().union(*(r.keys() for r in old)) if old else set()
    new_keys = set().union(*(r.keys() for r in new)) if new else set()
    if old_keys != new_keys:
        notes.append(f"keys only before: {sorted(old_keys - new_keys)}, only after: {sorted(new_keys - old_keys)}")
    max_xy, max_score, changed = 0.0, 0.0, 0
    for a, b in zip(old, new):
        xy = max((abs(u - v) for u, v in zip(a.get("keypoints", []), b.get("keypoints", []))), default=0.0)
        score = abs(a.get("score", 0.0) - b.get("score", 0.0))
        changed += int(xy > 0 or score > 0)
        max_xy, max_score = max(max_xy, xy), max(max_score, score)
    notes.append(f"{changed} of {len(old)} records changed; largest keypoint difference {max_xy:.3g} px, score {max_score:.3g}")
    return "; ".join(notes)


def without_keys(path: Path, keys: List[str]) -> bytes:
    """The JSON records of `path` without `keys`, serialised one way for both sides."""
    records = json.loads(path.read_text())
    return json.dumps([{k: v for k, v in record.items() if k not in keys} for record in records]).encode()


def checked_out(revision: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(where), revision], check=True)
    return where


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision", help="git revision of the code before (e.g. 4d9dbb6)")
    parser.add_argument("--after", help="git revision of the code after (default: this checkout's working tree)")
    parser.add_argument("--ignore-key", action="append", default=[], metavar="KEY",
                        help="set this record field aside on both sides before comparing (repeatable)")
    parser.add_argument("--patch-before", type=Path, metavar="FILE", help="git patch applied to the old side's worktree")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="COCO sample folder (images + json files)")
    parser.add_argument("--ann", type=Path, help="annotation file (default: DATA/person_keypoints_sample.json)")
    parser.add_argument("--dets", type=Path, help="detections file (default: DATA/person_dets_sample.json)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="MSPN weights (default: seeded test weights)")
    parser.add_argument("--backend", default="onnxruntime", help="inference backend for both sides")
    parser.add_argument("--keep", action="store_true", help="keep the outputs of both sides (the worktree is always removed)")
    args = parser.parse_args(argv)
    args.data = args.data.resolve()
    args.ann = (args.ann or args.data / "person_keypoints_sample.json").resolve()
    args.dets = (args.dets or args.data / "person_dets_sample.json").resolve()
    args.weights = seeded_weights(args.weights.resolve())
    images = images_with_boxes(args.data, args.dets, args.ann)

    work = Path(tempfile.mkdtemp(prefix="mspn-parity-"))
    trees = [checked_out(args.revision, work / "old")]
    try:
        if args.patch_before:
            subprocess.run(["git", "-C", str(trees[0]), "apply", str(args.patch_before.resolve())], check=True)
        new_src = REPO / "src"
        if args.after:
            trees.append(checked_out(args.after, work / "new"))
            new_src = trees[-1] / "src"
        label = f"old {args.revision}" + (f" + {args.patch_before.name}" if args.patch_before else "")
        old = run_side(label, trees[0] / "src", work / "out_old", args, images)
        new = run_side(f"new {args.after or 'working tree'}", new_src, work / "out_new", args, images)
        results: List[Tuple[str, bool, str]] = []
        for name in old:
            exists = old[name].exists() and new[name].exists()
            if exists and old[name].read_bytes() == new[name].read_bytes():
                results.append((name, True, "byte-identical"))
            elif exists and args.ignore_key and without_keys(old[name], args.ignore_key) == without_keys(new[name], args.ignore_key):
                results.append((name, True, f"identical apart from {', '.join(args.ignore_key)}"))
            else:
                results.append((name, False, "DIFFERENT: " + describe_difference(old[name], new[name])))
    finally:
        for tree in trees:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    print(f"\n{len(images)} images, boxes {args.dets.name}, backend {args.backend}, weights {args.weights.name}")
    for name, same, detail in results:
        print(f"{name:18s} {detail}")
    if args.keep:
        print(f"outputs kept in {work}")
    return 0 if all(same for _, same, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
